//! The connection manager's RBAC filters (`envoy.filters.http.rbac`): each decides the
//! request in order before it is routed, counting under `http.<stat_prefix>.rbac.`; the
//! first that denies answers it locally as Envoy does (403 `RBAC: access denied`, to a
//! gRPC request a trailers-only `grpc-status: 7`), and the later filters and the router
//! never see it.

use http::{Response, StatusCode};

use super::req::local_reply;
use crate::config::listener::{HttpFilter, HttpManager};
use crate::config::rbac::Subject;
use crate::config::route::RequestView;
use crate::data::ctx::{ConnInfo, Ctx};
use crate::data::rbac;
use crate::data::upstream::io::Body;

/// The body (and `grpc-message`) of Envoy's RBAC denial.
pub(crate) const DENIED: &str = "RBAC: access denied";

/// The denial of the first RBAC filter of `hcm` that denies the request; none when
/// every one allows it.
pub(super) fn deny(
    ctx: &Ctx,
    conn: &ConnInfo,
    hcm: &HttpManager,
    request: &RequestView<'_>,
) -> Option<Response<Body>> {
    let mut filters = hcm
        .filters
        .iter()
        .filter_map(|f| match f {
            HttpFilter::Rbac(r) => Some(r),
            HttpFilter::Router => None,
        })
        .peekable();
    filters.peek()?;
    let subject = Subject {
        request: Some(request),
        destination_port: conn.destination.port(),
        peer: rbac::peer(conn),
    };
    let prefix = rbac::stat_prefix(&format!("http.{}.", hcm.stat_prefix));
    for f in filters {
        if !rbac::check(&ctx.stats, &prefix, f, &subject) {
            return Some(local_reply(request.headers, StatusCode::FORBIDDEN, DENIED));
        }
    }
    None
}
