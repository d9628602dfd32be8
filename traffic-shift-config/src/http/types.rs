//! The checked `http[]` and `tls[]` rules, as the model and the L7 proxy
//! read them; and the [`Context`] of the `VirtualService` they are checked
//! in.

use std::{collections::BTreeMap, time::Duration};

use crate::common::{Labels, RouteDestination};
pub use crate::dto::DerivePort;

/// `exact`, `prefix` or `regex` (RE2); `Any` is `{}`: for `headers`,
/// `queryParams` and `withoutHeaders` "present", elsewhere no condition.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StringMatch {
    Exact(String),
    Prefix(String),
    Regex(String),
    Any,
}

/// One `http[]` rule.
#[derive(Clone, Debug, PartialEq)]
pub struct HttpRule {
    pub name: Option<String>,
    /// OR'ed; empty: every request.
    pub matches: Vec<HttpMatch>,
    pub route: Vec<HttpRouteDestination>,
    pub redirect: Option<HttpRedirect>,
    pub direct_response: Option<DirectResponse>,
    pub delegate: Option<Delegate>,
    pub rewrite: Option<Rewrite>,
    pub timeout: Option<Duration>,
    pub retries: Option<Retries>,
    pub fault: Option<Fault>,
    /// `mirror`, with `mirrorPercentage` (or the deprecated
    /// `mirrorPercent`).
    pub mirror: Option<Mirror>,
    /// `mirrors`: not with `mirror`.
    pub mirrors: Vec<Mirror>,
    pub cors_policy: Option<CorsPolicy>,
    pub headers: Headers,
}

/// One `match[]` entry: its fields are AND'ed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HttpMatch {
    pub name: Option<String>,
    pub uri: Option<StringMatch>,
    pub scheme: Option<StringMatch>,
    pub method: Option<StringMatch>,
    pub authority: Option<StringMatch>,
    pub headers: BTreeMap<String, StringMatch>,
    pub query_params: BTreeMap<String, StringMatch>,
    pub without_headers: BTreeMap<String, StringMatch>,
    pub ignore_uri_case: bool,
    pub port: Option<u16>,
    pub source_labels: Labels,
    /// Overrides the `VirtualService`'s `gateways` for this match.
    pub gateways: Vec<String>,
    pub source_namespace: Option<String>,
    pub stat_prefix: Option<String>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct HttpRouteDestination {
    pub destination: RouteDestination,
    /// Header changes for requests to this destination only.
    pub headers: Headers,
    /// What else is done to the requests this destination is picked for:
    /// a Gateway API backendRef's own `RequestRedirect`, `URLRewrite` and
    /// `RequestMirror` filters (a VirtualService has none of them).
    pub actions: Option<Box<DestinationActions>>,
}

/// A destination's own redirect, rewrite and mirrors, in place of the
/// rule's redirect and rewrite (a backendRef's filter is the more
/// specific one) and beside the rule's mirrors.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct DestinationActions {
    /// The proxy answers the redirect when the destination is picked.
    pub redirect: Option<HttpRedirect>,
    pub rewrite: Option<Rewrite>,
    pub mirrors: Vec<Mirror>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Headers {
    pub request: HeaderOperations,
    pub response: HeaderOperations,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HeaderOperations {
    pub set: BTreeMap<String, String>,
    pub add: BTreeMap<String, String>,
    pub remove: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HttpRedirect {
    pub uri: Option<String>,
    pub prefix_rewrite: Option<String>,
    /// The path rewritten by an RE2 regex, `(match, rewrite)`: a Gateway
    /// API `ReplacePrefixMatch` (whole path segments), never an Istio
    /// field.
    pub uri_regex: Option<(String, String)>,
    pub authority: Option<String>,
    pub port: Option<RedirectPort>,
    pub scheme: Option<String>,
    /// Default 301.
    pub redirect_code: u16,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RedirectPort {
    Number(u16),
    Derive(DerivePort),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DirectResponse {
    pub status: u16,
    pub body: Option<DirectBody>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DirectBody {
    String(String),
    /// Base64, as written.
    Bytes(String),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Delegate {
    pub name: String,
    /// Absent: the `VirtualService`'s namespace.
    pub namespace: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rewrite {
    pub uri: Option<String>,
    pub authority: Option<String>,
    /// `uriRegexRewrite`: `(match, rewrite)`.
    pub uri_regex: Option<(String, String)>,
}

/// `Default`: no retries (`attempts: 0`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Retries {
    /// 0 disables retries.
    pub attempts: u32,
    pub per_try_timeout: Option<Duration>,
    /// `retryOn`, split at commas.
    pub retry_on: Vec<String>,
    pub retry_remote_localities: Option<bool>,
    pub retry_ignore_previous_hosts: Option<bool>,
    pub backoff: Option<Duration>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Fault {
    pub delay: Option<FaultDelay>,
    pub abort: Option<FaultAbort>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct FaultDelay {
    pub delay: DelayKind,
    /// Of the requests, 0.0..=100.0; absent: all of them.
    pub percentage: Option<f64>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DelayKind {
    Fixed(Duration),
    /// Parsed; Istio refuses it ("not supported yet"), so do we.
    Exponential(Duration),
}

#[derive(Clone, Debug, PartialEq)]
pub struct FaultAbort {
    /// `None`: Istio warns "abort configured, but error type not set".
    pub error: Option<AbortError>,
    pub percentage: Option<f64>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AbortError {
    HttpStatus(u16),
    GrpcStatus(String),
}

#[derive(Clone, Debug, PartialEq)]
pub struct Mirror {
    /// `weight` is always `None` here.
    pub destination: RouteDestination,
    /// Of the requests, 0.0..=100.0; absent: all of them.
    pub percentage: Option<f64>,
}

/// `corsPolicy` (or a Gateway API `CORS` filter, translated as Istio
/// translates it): the proxy answers a preflight of an allowed origin
/// itself, and adds the allowed origin's headers to the other answers.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CorsPolicy {
    /// An `Origin` that matches one of these (as written, case-sensitive)
    /// is allowed.
    pub allow_origins: Vec<StringMatch>,
    /// `*` alone: any method (the Gateway API's wildcard).
    pub allow_methods: Vec<String>,
    /// `*` alone: any header.
    pub allow_headers: Vec<String>,
    pub expose_headers: Vec<String>,
    pub max_age: Option<Duration>,
    pub allow_credentials: Option<bool>,
    pub unmatched_preflights: UnmatchedPreflights,
}

/// What becomes of a preflight whose origin is not allowed
/// (`unmatchedPreflights`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum UnmatchedPreflights {
    /// Sent on to the route's destination, as any request (Istio's
    /// default, `FORWARD`).
    #[default]
    Forward,
    /// Answered 200 by the proxy, without CORS headers (`IGNORE`: what
    /// Istio writes for a Gateway API `CORS` filter).
    Ignore,
}

/// One `tls[]` rule. Modelled and checked; `resolve` refuses it (the
/// kernel path cannot read SNI yet).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsRule {
    pub matches: Vec<TlsMatch>,
    pub route: Vec<RouteDestination>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TlsMatch {
    pub sni_hosts: Vec<String>,
    pub destination_subnets: Vec<String>,
    pub port: Option<u16>,
    pub source_labels: Labels,
    pub gateways: Vec<String>,
    pub source_namespace: Option<String>,
}

/// What the rules of a `VirtualService` need to know of it.
pub(crate) struct Context<'a> {
    pub hosts: &'a [String],
    /// Bound to gateways only (`gateways` set, without `mesh`).
    pub gateway_only: bool,
    /// No hosts: a delegate.
    pub delegate: bool,
}
