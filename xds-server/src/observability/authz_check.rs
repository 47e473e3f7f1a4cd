//! `rudder.authz.v1.Authz/Check`, the unary gRPC call behind `xdsctl authz check`:
//! whether a caller may make a request to a Service, and which objects decided,
//! answered from the model (`translator::policy::authz::check_service`) without sending
//! traffic. Served on the xDS port beside CSDS, to the same admin identities.

use std::convert::Infallible;
use std::sync::Arc;
use std::task::{Context, Poll};

use tonic::{Request, Response, Status};
use translator::policy::authz::{CheckRequest, CheckResponse, check_service};

use crate::observability::csds::CsdsService;
use crate::xds::store::Store;

/// The service name.
pub(crate) const SERVICE: &str = "rudder.authz.v1.Authz";
/// The method's path.
pub(crate) const CHECK_PATH: &str = "/rudder.authz.v1.Authz/Check";
/// Largest request read (a few names and a path).
pub(crate) const REQUEST_BYTES: usize = 16 * 1024;

/// The service: the store to answer from, and CSDS's caller check.
#[derive(Clone)]
pub(crate) struct AuthzCheck {
    store: Arc<Store>,
    guard: CsdsService,
}

impl AuthzCheck {
    pub(crate) fn new(store: Arc<Store>, guard: CsdsService) -> Self {
        AuthzCheck { store, guard }
    }

    fn answer(&self, req: &Request<CheckRequest>) -> Result<CheckResponse, Status> {
        self.guard.authorize(req)?;
        let q = req.get_ref();
        if [
            &q.from_namespace,
            &q.from_service_account,
            &q.to_namespace,
            &q.to_service,
            &q.method,
        ]
        .iter()
        .any(|s| s.len() > 253)
            || q.path.len() > 4096
        {
            return Err(Status::invalid_argument(
                "a field is longer than a name or path may be",
            ));
        }
        self.store
            .read(|m| check_service(m, self.store.mesh(), q))
            .map_err(Status::not_found)
    }
}

impl tonic::server::NamedService for AuthzCheck {
    const NAME: &'static str = SERVICE;
}

struct Check(AuthzCheck);

impl tonic::server::UnaryService<CheckRequest> for Check {
    type Response = CheckResponse;
    type Future = std::future::Ready<Result<Response<CheckResponse>, Status>>;

    fn call(&mut self, request: Request<CheckRequest>) -> Self::Future {
        std::future::ready(self.0.answer(&request).map(Response::new))
    }
}

impl<B> tonic::codegen::Service<http::Request<B>> for AuthzCheck
where
    B: http_body::Body + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>> + Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<Self::Response, Infallible>> + Send>,
    >;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        if req.uri().path() != CHECK_PATH {
            return Box::pin(async { Ok(Status::unimplemented("no such method").into_http()) });
        }
        let svc = Check(self.clone());
        Box::pin(async move {
            let mut grpc = tonic::server::Grpc::new(tonic_prost::ProstCodec::default())
                .max_decoding_message_size(REQUEST_BYTES);
            Ok(grpc.unary(svc, req).await)
        })
    }
}
