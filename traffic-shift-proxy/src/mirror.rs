//! Mirroring: a copy of a request sent to each mirror destination its route
//! picks (by the mirror's percentage), not waited for, its answer dropped.
//! A request with a body is copied from the replay buffer once the request
//! itself has been sent (as Envoy's shadows wait for the whole body); one
//! whose body outgrew the buffer is not copied (counted as such). An
//! upgrade request's copy is a plain request (no `Upgrade`).

use std::time::Duration;

use http_body_util::BodyExt;
use hyper::header::{self, HeaderValue};
use traffic_shift_config::model::{Destination, HttpMirror};

use crate::{
    Proxy,
    body::{Replayable, RequestBody},
    forward::Outgoing,
    routes, select,
};

/// The mirrors a request of `route` sent to its destination `index` is
/// copied to: the route's and the destination's own, each by its share.
/// Each share is exact: one count per request of the route for the
/// route's mirrors, per request sent to the destination for its own.
pub(crate) fn picked(route: &routes::Route, index: usize) -> Vec<&HttpMirror> {
    let model = &route.model;
    let own = model.destinations[index]
        .actions
        .as_deref()
        .map_or(&[][..], |actions| &actions.mirrors[..]);
    let turn = (!model.mirrors.is_empty()).then(|| route.state.next_request());
    let own_turn = (!own.is_empty()).then(|| route.state.next_request_to(index));
    let by_share = |turn: Option<u64>| {
        move |mirror: &&HttpMirror| turn.is_some_and(|n| select::mirrored(n, mirror.percentage))
    };
    model
        .mirrors
        .iter()
        .filter(by_share(turn))
        .chain(own.iter().filter(by_share(own_turn)))
        .collect()
}

impl Proxy {
    /// Sends a copy of the request to a mirror destination, not waiting
    /// for it; its answer is dropped. The authority gets `-shadow`, as
    /// Envoy marks mirrored requests. `body`: the request's replay buffer
    /// (`None`: it has no body).
    pub(crate) fn mirror(
        &self,
        outgoing: &Outgoing,
        authority: &str,
        dest: &Destination,
        http2: bool,
        timeout: Option<Duration>,
        body: Option<Replayable>,
    ) {
        let n = dest.endpoints.len();
        if n == 0 {
            return;
        }
        let http2 = http2 || outgoing.is_grpc();
        let endpoint = dest.endpoints[select::random_u32() as usize % n].addr;
        let mut copy = outgoing.clone();
        let host = routes::strip_port(authority);
        let shadow = format!("{host}-shadow{}", &authority[host.len()..]);
        if let Ok(value) = HeaderValue::from_str(&shadow) {
            copy.headers.insert(header::HOST, value);
        }
        // A copy is a plain request: an upgrade goes to the primary only.
        copy.headers.remove(header::UPGRADE);
        copy.headers.remove(header::CONNECTION);
        let client = self.upstream.client(http2).clone();
        let timeout = timeout.unwrap_or(Duration::from_secs(30));
        tokio::spawn(async move {
            let body = match body {
                None => RequestBody::Empty,
                Some(replayable) => {
                    let Some(body) = replayable.body(timeout).await else {
                        tracing::debug!(%endpoint, overflowed = replayable.overflowed(), "L7 proxy: no mirror copy: the request body is not kept");
                        return;
                    };
                    body
                }
            };
            let request = copy.to_request(endpoint, http2, body);
            match tokio::time::timeout(timeout, client.request(request)).await {
                Ok(Ok(response)) => {
                    // Read the answer so the connection goes back to the pool.
                    let _ = response.into_body().collect().await;
                }
                Ok(Err(err)) => tracing::debug!(%endpoint, %err, "L7 proxy: mirror request failed"),
                Err(_) => tracing::debug!(%endpoint, "L7 proxy: mirror request timed out"),
            }
        });
    }
}
