//! The mesh as the gateway sees it: every replica of every downstream pool
//! asked for its `mlmesh.mesh.v1.Introspection` status (at once, each
//! within a short deadline), plus the gateway itself. The console's
//! overview and metrics history are built from these observations.

use std::time::Duration;

use futures::future::join_all;
use mlmesh_proto::mesh::v1::{
    StatusRequest, StatusResponse, introspection_client::IntrospectionClient,
};
use tonic::Request;

use super::Core;

/// How long one replica may take to answer.
const STATUS_DEADLINE: Duration = Duration::from_secs(1);

/// One replica's answer, or why there is none.
#[derive(Clone, Debug)]
pub struct Observation {
    /// The pool: `gateway`, `embedding`, `vector-search`, `inference`.
    pub service: &'static str,
    /// The replica's address as the pool dials it (`self` for the gateway).
    pub address: String,
    pub status: Result<StatusResponse, String>,
}

impl Core {
    /// Every replica's status, the gateway's own first.
    pub async fn observe_mesh(&self) -> Vec<Observation> {
        let mut out = vec![Observation {
            service: "gateway",
            address: "self".into(),
            status: Ok(self.own_status.snapshot()),
        }];
        let calls = self.pools().into_iter().flat_map(|(p, _)| {
            let service = p.service();
            p.channels()
                .into_iter()
                .map(move |(address, ch)| async move {
                    let mut rq = Request::new(StatusRequest {});
                    rq.set_timeout(STATUS_DEADLINE);
                    let status = match tokio::time::timeout(
                        STATUS_DEADLINE,
                        IntrospectionClient::new(ch).status(rq),
                    )
                    .await
                    {
                        Ok(Ok(r)) => Ok(r.into_inner()),
                        Ok(Err(s)) => Err(format!("{:?}: {}", s.code(), s.message())),
                        Err(_) => Err(format!("no answer within {} s", STATUS_DEADLINE.as_secs())),
                    };
                    Observation {
                        service,
                        address,
                        status,
                    }
                })
        });
        out.extend(join_all(calls).await);
        out
    }
}
