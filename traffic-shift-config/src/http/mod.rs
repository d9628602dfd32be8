//! VirtualService `http[]` and `tls[]` rules: modelled and checked as
//! Istio's `validateHTTPRoute` / `validateTLSRoute` do
//! (`istio/istio` `pkg/config/validation/virtualservice.go`,
//! `validation.go`). `resolve` turns `http` rules into the listeners of
//! the L7 proxy (`traffic-shift-proxy`), which serves them per request; it
//! refuses `tls` rules (nothing reads SNI yet).

mod fault;
mod headers;
mod matches;
mod reply;
mod route;
mod tls;
mod types;

pub use self::types::{
    AbortError, CorsPolicy, DelayKind, Delegate, DerivePort, DestinationActions, DirectBody,
    DirectResponse, Fault, FaultAbort, FaultDelay, HeaderOperations, Headers, HttpMatch,
    HttpRedirect, HttpRouteDestination, HttpRule, Mirror, RedirectPort, Retries, Rewrite,
    StringMatch, TlsMatch, TlsRule, UnmatchedPreflights,
};
pub(crate) use self::{
    matches::unreachable_http_rules, route::http_rule, tls::tls_rule, types::Context,
};
