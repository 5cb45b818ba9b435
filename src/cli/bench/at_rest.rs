//! What sealing records at rest costs: two gateways of the same build and profile, one with
//! `[keys]` and one without, each a process of its own, measured in turns — CreateProject, then
//! GetProject, then ListProjects (page of 50) — each call alternating between the two
//! [`ROUNDS`] times (which goes first alternates too), so that the machine's drift falls on
//! both alike; the median of each one's turns is compared. One gateway after the other would
//! compare two moments of a shared machine, not two builds.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use serde::Serialize;

use super::child::Server;
use super::load::drive;
use super::rpc::RpcOptions;
use crate::wire::pb;

/// Turns of each call at each gateway.
pub const ROUNDS: usize = 3;

#[derive(Debug, Serialize)]
pub struct AtRestFigures {
    pub rounds: usize,
    pub seconds_per_turn: u64,
    /// Median requests per second of each call's turns.
    pub in_clear: CallRates,
    pub sealed: CallRates,
    /// Sealed over in clear.
    pub sealed_over_clear: CallRates,
}

#[derive(Debug, Serialize, Clone, Copy, Default)]
pub struct CallRates {
    pub create_project: f64,
    pub get_project: f64,
    pub list_projects_page_50: f64,
}

type Projects = pb::project_service_client::ProjectServiceClient<tonic::transport::Channel>;

/// One gateway under measurement and its clients.
struct Side {
    server: Server,
    clients: Arc<Vec<Projects>>,
}

/// Measures the gateways of the configs `clear` and `sealed` (each with the root its
/// certificates are under).
pub async fn run(
    clear: (&Path, &Path),
    sealed: (&Path, &Path),
    options: &RpcOptions,
) -> anyhow::Result<AtRestFigures> {
    let seconds = (options.seconds / 2).max(1);
    let open = |(root, config): (&Path, &Path)| -> anyhow::Result<Side> {
        let server = Server::gateway(config, None)?;
        let clients = super::client_channels(root, "zone", server.addr, options.connections)?
            .into_iter()
            .map(Projects::new)
            .collect();
        Ok(Side {
            server,
            clients: Arc::new(clients),
        })
    };
    let sides = [open(clear)?, open(sealed)?];
    tokio::time::sleep(Duration::from_secs(1)).await;
    let turn = Duration::from_secs(seconds);

    say!("  CreateProject, in turns");
    let create = turns(options, &sides, turn, |clients, _| {
        move |w: usize, i: u64| {
            let mut client = clients[w % clients.len()].clone();
            async move {
                client
                    .create_project(super::create_request((w as u64) << 40 | i))
                    .await
                    .map(|_| ())
            }
        }
    })
    .await;
    let mut names = Vec::new();
    for side in &sides {
        let mut lister = side.clients[0].clone();
        let page = lister
            .list_projects(pb::ListProjectsRequest {
                page_size: 500,
                ..Default::default()
            })
            .await
            .context("listing projects for the GetProject turns")?
            .into_inner();
        anyhow::ensure!(
            !page.projects.is_empty(),
            "the CreateProject turns wrote nothing"
        );
        names.push(Arc::new(
            page.projects
                .into_iter()
                .map(|p| p.name)
                .collect::<Vec<_>>(),
        ));
    }
    say!("  GetProject, in turns");
    let get = turns(options, &sides, turn, |clients, side| {
        let names = names[side].clone();
        move |w: usize, i: u64| {
            let mut client = clients[w % clients.len()].clone();
            let request = super::get_request(&names, w, i);
            async move { client.get_project(request).await.map(|_| ()) }
        }
    })
    .await;
    say!("  ListProjects (page of 50), in turns");
    let list = turns(options, &sides, turn, |clients, _| {
        move |w: usize, _| super::rpc::list_page_of_50(clients[w % clients.len()].clone())
    })
    .await;
    for side in sides {
        drop(side.clients);
        side.server.stop()?;
    }
    let rates = |i: usize| CallRates {
        create_project: create[i],
        get_project: get[i],
        list_projects_page_50: list[i],
    };
    let (in_clear, sealed) = (rates(0), rates(1));
    let over = |s: f64, c: f64| if c > 0.0 { s / c } else { 0.0 };
    Ok(AtRestFigures {
        rounds: ROUNDS,
        seconds_per_turn: seconds,
        sealed_over_clear: CallRates {
            create_project: over(sealed.create_project, in_clear.create_project),
            get_project: over(sealed.get_project, in_clear.get_project),
            list_projects_page_50: over(
                sealed.list_projects_page_50,
                in_clear.list_projects_page_50,
            ),
        },
        in_clear,
        sealed,
    })
}

/// The median requests per second of [`ROUNDS`] turns of the call `make` builds, at each side
/// in turn (after a short warm-up at each).
async fn turns<M, F, Fut>(
    options: &RpcOptions,
    sides: &[Side; 2],
    turn: Duration,
    make: M,
) -> [f64; 2]
where
    M: Fn(Arc<Vec<Projects>>, usize) -> F,
    F: Fn(usize, u64) -> Fut + Send + Sync + Clone + 'static,
    Fut: std::future::Future<Output = Result<(), tonic::Status>> + Send + 'static,
{
    let calls: Vec<F> = (0..2).map(|i| make(sides[i].clients.clone(), i)).collect();
    for call in &calls {
        drive(
            options.concurrency,
            Duration::from_millis(500),
            call.clone(),
        )
        .await;
    }
    let mut rates = [Vec::new(), Vec::new()];
    for round in 0..ROUNDS {
        let order = if round % 2 == 0 { [0, 1] } else { [1, 0] };
        for i in order {
            let t = drive(options.concurrency, turn, calls[i].clone()).await;
            rates[i].push(t.requests_per_second);
        }
    }
    rates.map(|mut r| {
        r.sort_by(|a, b| a.total_cmp(b));
        r[r.len() / 2]
    })
}
