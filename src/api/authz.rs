//! The tower layer that authorizes every gRPC call before any handler runs: it reads the
//! identity the TLS handshake proved ([`PeerInfo`]), applies [`AccessPolicy::authorize`], and
//! either puts the [`Caller`] into the request's extensions or answers with
//! UNAUTHENTICATED / PERMISSION_DENIED.

use std::sync::Arc;
use std::task::{Context, Poll};

use futures_util::future::BoxFuture;
use tower::{Layer, Service};

use super::error::authz_status;
use crate::identity::tls::PeerInfo;
use crate::identity::{AccessPolicy, AuthzError, Caller};

#[derive(Clone)]
pub struct AuthzLayer {
    policy: Arc<AccessPolicy>,
}

impl AuthzLayer {
    pub fn new(policy: Arc<AccessPolicy>) -> Self {
        AuthzLayer { policy }
    }
}

impl<S> Layer<S> for AuthzLayer {
    type Service = Authz<S>;
    fn layer(&self, inner: S) -> Authz<S> {
        Authz {
            inner,
            policy: self.policy.clone(),
        }
    }
}

#[derive(Clone)]
pub struct Authz<S> {
    inner: S,
    policy: Arc<AccessPolicy>,
}

impl<S, B> Service<http::Request<B>> for Authz<S>
where
    S: Service<http::Request<B>, Response = http::Response<tonic::body::Body>>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    B: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: http::Request<B>) -> Self::Future {
        let path = req.uri().path().to_string();
        let peer = req.extensions().get::<PeerInfo>().cloned();
        let decision: Result<Caller, AuthzError> = match peer.as_ref().map(|p| &p.identity) {
            Some(Ok(id)) => self
                .policy
                .caller(id)
                .and_then(|caller| self.policy.authorize(&caller, &path).map(|_| caller))
                .and_then(|caller| {
                    let negotiated = &peer.as_ref().map(|p| &p.negotiated);
                    match negotiated {
                        Some(n) => self.policy.check_channel(&caller, &path, n),
                        None => Ok(()),
                    }
                    .map(|()| caller)
                }),
            Some(Err(why)) => Err(AuthzError::NoIdentity(why.clone())),
            None => Err(AuthzError::NoIdentity(
                "connection carries no TLS identity".into(),
            )),
        };
        match decision {
            Ok(caller) => {
                req.extensions_mut().insert(caller);
                // The clone is ready only after poll_ready; keep the ready one for this call.
                let clone = self.inner.clone();
                let mut inner = std::mem::replace(&mut self.inner, clone);
                Box::pin(inner.call(req))
            }
            Err(e) => {
                tracing::warn!(
                    method = %path,
                    remote = ?peer.as_ref().and_then(|p| p.remote_addr),
                    reason = %e,
                    "call refused"
                );
                let response = authz_status(&e).into_http();
                Box::pin(async move { Ok(response) })
            }
        }
    }
}
