//! Requests and records as a county system would send them.

use yrd_gateway::wire::pb;

/// A made-up unified social credit code with a correct GB 32100-2015 check character.
pub const CREDIT_CODE: &str = "91330522MA2B3C4D57";

/// A complete, valid project as a client would send it.
pub fn sample_project(display_name: &str) -> pb::Project {
    pb::Project {
        display_name: display_name.to_string(),
        investor: Some(pb::Investor {
            name: "浙江某某新能源汽车零部件有限公司".into(),
            credit_code: CREDIT_CODE.into(),
        }),
        industry: pb::Industry::NewEnergyVehicles as i32,
        industry_code: "C3612".into(),
        total_investment_yuan: 1_500_000_000,
        land_area_mu: "120.5".into(),
        platform: "南华山".into(),
        contact: Some(pb::Contact {
            name: "张三".into(),
            phone: "+86 138-0000-0000".into(),
        }),
        service_officer: "李四".into(),
        checklist: vec![pb::ChecklistItem {
            item: "environmental impact assessment".into(),
            department: "湖州市生态环境局".into(),
            status: 0,
            due_date: "2027-03-31".into(),
        }],
        labels: [("batch".to_string(), "2026-q4".to_string())].into(),
        ..Default::default()
    }
}

pub fn create_request(project: pb::Project) -> pb::CreateProjectRequest {
    pb::CreateProjectRequest {
        project: Some(project),
        request_id: uuid::Uuid::now_v7().to_string(),
    }
}

/// Guangde's request for `items` of the catalog entry `entry`, for a joint investment fair.
pub fn access_request(entry: &str, items: &[&str]) -> pb::CreateAccessRequestRequest {
    pb::CreateAccessRequestRequest {
        access_request: Some(pb::AccessRequest {
            entry: entry.into(),
            items: items.iter().map(|s| s.to_string()).collect(),
            purpose: "联合招商对接".into(),
            scenario: "广德—长兴联合招商会".into(),
            validity_days: 30,
            ..Default::default()
        }),
        request_id: uuid::Uuid::now_v7().to_string(),
    }
}

/// A catalog data item of a project entry.
pub fn data_item(field: &str, class: pb::SharingClass, legal_basis: &str) -> pb::DataItem {
    pb::DataItem {
        field: field.into(),
        r#type: "string".into(),
        description: format!("{field} of the project"),
        sharing_class: class as i32,
        legal_basis: legal_basis.into(),
        open_to: Vec::new(),
    }
}

/// The contact phone of `project` (empty when withheld or absent).
pub fn phone_of(project: &pb::Project) -> String {
    project
        .contact
        .as_ref()
        .map(|c| c.phone.clone())
        .unwrap_or_default()
}
