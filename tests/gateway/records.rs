//! SPEC §3 through the API: validation, idempotency, etags, update masks, pagination.

use std::collections::BTreeSet;

use prost_types::FieldMask;
use tonic::Code;
use yrd_gateway::wire::pb;

use crate::common::*;

/// A way to spoil a valid message.
type Spoil<M> = Box<dyn Fn(&mut M)>;

fn update(project: pb::Project, paths: &[&str]) -> pb::UpdateProjectRequest {
    pb::UpdateProjectRequest {
        project: Some(project),
        update_mask: Some(FieldMask {
            paths: paths.iter().map(|p| p.to_string()).collect(),
        }),
        request_id: uuid::Uuid::now_v7().to_string(),
    }
}

#[tokio::test]
async fn every_bad_field_is_named_and_nothing_is_written() {
    let fed = TestFederation::start(&["zone"]).await;
    let mut client = fed.projects("zone", "zone");
    let cases: Vec<(&str, Spoil<pb::Project>, &str)> = vec![
        (
            "bad credit code check character",
            Box::new(|p| p.investor.as_mut().unwrap().credit_code = "91330522MA2B3C4D58".into()),
            "project.investor.credit_code",
        ),
        (
            "negative investment",
            Box::new(|p| p.total_investment_yuan = -1),
            "project.total_investment_yuan",
        ),
        (
            "float-looking land area",
            Box::new(|p| p.land_area_mu = "1.2e2".into()),
            "project.land_area_mu",
        ),
        (
            "unknown industry",
            Box::new(|p| p.industry = 99),
            "project.industry",
        ),
        ("unknown stage", Box::new(|p| p.stage = 42), "project.stage"),
        (
            "missing name",
            Box::new(|p| p.display_name = "  ".into()),
            "project.display_name",
        ),
        (
            "bad industry code",
            Box::new(|p| p.industry_code = "Z99".into()),
            "project.industry_code",
        ),
        (
            "bad due date",
            Box::new(|p| p.checklist[0].due_date = "2027-02-30".into()),
            "project.checklist[0].due_date",
        ),
        (
            "bad phone",
            Box::new(|p| p.contact.as_mut().unwrap().phone = "call me".into()),
            "project.contact.phone",
        ),
    ];
    for (what, mutate, field) in cases {
        let mut project = sample_project(what);
        mutate(&mut project);
        let err = client
            .create_project(create_request(project))
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{what}: {err:?}");
        assert_eq!(bad_fields(&err), vec![field.to_string()], "{what}");
        assert_eq!(error_reason(&err), "INVALID_ARGUMENT");
    }
    // Several bad fields at once are all reported.
    let mut project = sample_project("");
    project.total_investment_yuan = -5;
    project.land_area_mu = "-3".into();
    let err = client
        .create_project(create_request(project))
        .await
        .unwrap_err();
    let fields: BTreeSet<String> = bad_fields(&err).into_iter().collect();
    assert_eq!(
        fields,
        [
            "project.display_name",
            "project.total_investment_yuan",
            "project.land_area_mu"
        ]
        .map(String::from)
        .into()
    );
    // A request without a request id is refused too.
    let err = client
        .create_project(pb::CreateProjectRequest {
            project: Some(sample_project("no request id")),
            request_id: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(bad_fields(&err), vec!["request_id".to_string()]);
    assert!(
        all_projects(&mut client).await.is_empty(),
        "a refused create wrote something"
    );
}

#[tokio::test]
async fn a_backwards_stage_move_is_refused_and_changes_nothing() {
    let fed = TestFederation::start(&["changxing"]).await;
    let mut client = fed.projects("changxing", "changxing");
    let created = create_with(&mut client, "stage walk").await;
    let mut signed = created.clone();
    signed.stage = pb::Stage::Signed as i32;
    let signed = client
        .update_project(update(signed, &["stage"]))
        .await
        .unwrap()
        .into_inner()
        .project
        .unwrap();
    assert_eq!(signed.stage, pb::Stage::Signed as i32);
    assert_ne!(signed.etag, created.etag);

    let mut back = signed.clone();
    back.stage = pb::Stage::Lead as i32;
    let err = client
        .update_project(update(back, &["stage"]))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    assert_eq!(bad_fields(&err), vec!["project.stage".to_string()]);

    let mut referred = signed.clone();
    referred.stage = pb::Stage::Referred as i32;
    let err = client
        .update_project(update(referred, &["stage"]))
        .await
        .unwrap_err();
    assert_eq!(bad_fields(&err), vec!["project.stage".to_string()]);

    let now = get_with(&mut client, &signed.name.clone()).await;
    assert_eq!(now, signed);
}

#[tokio::test]
async fn a_retried_create_returns_the_first_result() {
    let fed = TestFederation::start(&["anji"]).await;
    let mut client = fed.projects("anji", "anji");
    let request = create_request(sample_project("retry me"));
    let first = client
        .create_project(request.clone())
        .await
        .unwrap()
        .into_inner();
    let second = client
        .create_project(request.clone())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(first, second);
    assert_eq!(all_projects(&mut client).await.len(), 1);

    // The same request id with a different request is a client bug, refused.
    let mut other = request.clone();
    other.project.as_mut().unwrap().display_name = "something else".into();
    let err = client.create_project(other).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    assert_eq!(error_reason(&err), "REQUEST_ID_REUSED");
    // So is a different request that would be refused on its own.
    let mut invalid = request.clone();
    invalid.project.as_mut().unwrap().display_name.clear();
    let err = client.create_project(invalid).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    assert_eq!(error_reason(&err), "REQUEST_ID_REUSED");
    assert_eq!(all_projects(&mut client).await.len(), 1);
}

#[tokio::test]
async fn a_stale_etag_is_refused_and_changes_nothing() {
    let fed = TestFederation::start(&["zone"]).await;
    let mut client = fed.projects("zone", "zone");
    let v1 = create_with(&mut client, "etag").await;
    let mut patch = v1.clone();
    patch.platform = "天子湖".into();
    let v2 = client
        .update_project(update(patch, &["platform"]))
        .await
        .unwrap()
        .into_inner()
        .project
        .unwrap();
    assert_eq!(v2.platform, "天子湖");

    let mut stale = v1.clone();
    stale.platform = "somewhere else".into();
    let err = client
        .update_project(update(stale, &["platform"]))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
    assert_eq!(error_reason(&err), "STALE_ETAG");

    let mut no_etag = v2.clone();
    no_etag.etag.clear();
    let err = client
        .update_project(update(no_etag, &["platform"]))
        .await
        .unwrap_err();
    assert_eq!(bad_fields(&err), vec!["project.etag".to_string()]);

    let now = get_with(&mut client, &v1.name.clone()).await;
    assert_eq!(now, v2);
}

#[tokio::test]
async fn an_update_changes_only_the_masked_fields_and_is_idempotent() {
    let fed = TestFederation::start(&["zone"]).await;
    let mut client = fed.projects("zone", "zone");
    let v1 = create_with(&mut client, "mask").await;
    let patch = pb::Project {
        name: v1.name.clone(),
        etag: v1.etag.clone(),
        display_name: "new name".into(),
        platform: "ignored: not in the mask".into(),
        contact: Some(pb::Contact {
            name: "ignored".into(),
            phone: "0572-1234567".into(),
        }),
        ..Default::default()
    };
    let request = update(patch, &["display_name", "contact.phone"]);
    let v2 = client
        .update_project(request.clone())
        .await
        .unwrap()
        .into_inner();
    let p = v2.project.clone().unwrap();
    assert_eq!(p.display_name, "new name");
    assert_eq!(p.platform, v1.platform);
    assert_eq!(p.contact.as_ref().unwrap().name, "张三");
    assert_eq!(p.contact.as_ref().unwrap().phone, "0572-1234567");
    assert_eq!(p.investor, v1.investor);

    // The retry carries a now-stale etag but the same request id: it gets the first result.
    let again = client.update_project(request).await.unwrap().into_inner();
    assert_eq!(again, v2);

    let err = client
        .update_project(update(p.clone(), &["owner"]))
        .await
        .unwrap_err();
    assert_eq!(bad_fields(&err), vec!["update_mask".to_string()]);
}

#[tokio::test]
async fn pagination_walks_every_project_exactly_once() {
    let fed = TestFederation::start(&["guangde"]).await;
    let mut client = fed.projects("guangde", "guangde");
    let mut created = Vec::new();
    for i in 0..37 {
        let mut p = sample_project(&format!("project {i}"));
        if i % 3 == 0 {
            p.industry = pb::Industry::CncMachineTools as i32;
        }
        created.push(
            client
                .create_project(create_request(p))
                .await
                .unwrap()
                .into_inner()
                .project
                .unwrap()
                .name,
        );
    }
    let mut seen = Vec::new();
    let mut token = String::new();
    let mut pages = 0;
    loop {
        let page = client
            .list_projects(pb::ListProjectsRequest {
                page_size: 10,
                page_token: token.clone(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        pages += 1;
        assert!(page.projects.len() <= 10);
        seen.extend(page.projects.into_iter().map(|p| p.name));
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    assert_eq!(pages, 4);
    assert_eq!(seen, created, "every project once, in creation order");

    // Typed filters.
    let cnc = client
        .list_projects(pb::ListProjectsRequest {
            industry: pb::Industry::CncMachineTools as i32,
            page_size: 100,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(cnc.projects.len(), 13);
    let others = client
        .list_projects(pb::ListProjectsRequest {
            owner: "zone".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(others.projects.is_empty());

    // A token is tied to its filters; a made-up token is refused.
    let first = client
        .list_projects(pb::ListProjectsRequest {
            page_size: 5,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let err = client
        .list_projects(pb::ListProjectsRequest {
            page_size: 5,
            page_token: first.next_page_token,
            stage: pb::Stage::Lead as i32,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(bad_fields(&err), vec!["page_token".to_string()]);
    let err = client
        .list_projects(pb::ListProjectsRequest {
            page_token: "garbage".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(bad_fields(&err), vec!["page_token".to_string()]);
    let err = client
        .list_projects(pb::ListProjectsRequest {
            page_size: -1,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(bad_fields(&err), vec!["page_size".to_string()]);
}

fn proposal() -> pb::Allocation {
    pb::Allocation {
        kind: pb::FactorKind::LandQuota as i32,
        quantity: "200".into(),
        from_party: "guangde".into(),
        to_party: "zone".into(),
        benefit_shares: vec![
            pb::BenefitShare {
                party: "zone".into(),
                basis_points: 6000,
            },
            pb::BenefitShare {
                party: "guangde".into(),
                basis_points: 4000,
            },
        ],
        valid_until: Some(prost_types::Timestamp::from(
            std::time::SystemTime::now() + std::time::Duration::from_secs(30 * 86_400),
        )),
        description: "land quota for a new-energy-vehicle project".into(),
        ..Default::default()
    }
}

#[tokio::test]
async fn allocations_are_validated_and_listed() {
    let fed = TestFederation::start(&["zone"]).await;
    let mut factors = fed.factors("zone", "zone");
    let created = factors
        .propose_allocation(pb::ProposeAllocationRequest {
            allocation: Some(proposal()),
            request_id: uuid::Uuid::now_v7().to_string(),
        })
        .await
        .unwrap()
        .into_inner()
        .allocation
        .unwrap();
    assert!(created.name.starts_with("parties/zone/allocations/"));
    assert_eq!(created.status, pb::AllocationStatus::Proposed as i32);
    assert_eq!(created.round, 1);
    assert_eq!(created.unit, "mu");
    assert_eq!(
        created.required_parties,
        vec!["zone".to_string(), "guangde".to_string()]
    );

    let bad: Vec<(Spoil<pb::Allocation>, &str)> = vec![
        (
            Box::new(|a| a.benefit_shares[0].basis_points = 5000),
            "allocation.benefit_shares",
        ),
        (
            Box::new(|a| a.to_party = "guangde".into()),
            "allocation.to_party",
        ),
        (
            Box::new(|a| a.from_party = "shanghai".into()),
            "allocation.from_party",
        ),
        (Box::new(|a| a.quantity = "0".into()), "allocation.quantity"),
        (
            Box::new(|a| a.quantity = "2e2".into()),
            "allocation.quantity",
        ),
        (
            Box::new(|a| a.pollutant = pb::Pollutant::So2 as i32),
            "allocation.pollutant",
        ),
        (
            Box::new(|a| {
                a.valid_until = Some(prost_types::Timestamp {
                    seconds: 1,
                    nanos: 0,
                })
            }),
            "allocation.valid_until",
        ),
        (
            Box::new(|a| a.project = format!("parties/zone/projects/{}", uuid::Uuid::now_v7())),
            "allocation.project",
        ),
    ];
    for (mutate, field) in bad {
        let mut a = proposal();
        mutate(&mut a);
        let err = factors
            .propose_allocation(pb::ProposeAllocationRequest {
                allocation: Some(a),
                request_id: uuid::Uuid::now_v7().to_string(),
            })
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{field}: {err:?}");
        assert_eq!(bad_fields(&err), vec![field.to_string()], "{field}");
    }
    let listed = factors
        .list_allocations(pb::ListAllocationsRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(listed.allocations, vec![created.clone()]);
    let expired = factors
        .list_allocations(pb::ListAllocationsRequest {
            status: pb::AllocationStatus::Expired as i32,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(expired.allocations.is_empty());
    let got = factors
        .get_allocation(pb::GetAllocationRequest {
            name: created.name.clone(),
        })
        .await
        .unwrap()
        .into_inner()
        .allocation
        .unwrap();
    assert_eq!(got, created);
}

#[tokio::test]
async fn reads_of_missing_or_malformed_names_are_clear() {
    let fed = TestFederation::start(&["zone"]).await;
    let mut client = fed.projects("zone", "zone");
    let missing = format!("parties/zone/projects/{}", uuid::Uuid::now_v7());
    let err = client
        .get_project(pb::GetProjectRequest { name: missing })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    let err = client
        .get_project(pb::GetProjectRequest {
            name: "projects/123".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert_eq!(bad_fields(&err), vec!["name".to_string()]);
}
