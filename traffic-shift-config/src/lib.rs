//! Istio networking YAML (and our own `Rollout` kind) -> the validated
//! [`RoutingModel`].
//!
//! Three steps, each with errors that name the file, the document, the
//! resource, the field (`spec.tcp[0].route[1].weight`) and its line:
//!
//! 1. [`parse_file_all`]: each YAML document through serde into the DTOs of
//!    `dto` (strict: a misspelt field is an error), then checked on its own
//!    into a [`Resource`] (Istio's validation, Istio's messages). Every
//!    error of every document is reported; a file with one is refused
//!    whole. [`parse_file`] gives the first error only.
//! 2. [`load_dir`]: every rules file of a directory.
//! 3. [`resolve_all`]: the checks across resources (hosts, subsets, ports,
//!    one route per service address), and the [`RoutingModel`];
//!    [`resolve()`] gives the first error only.
//!
//! Warnings ([`Warning`]: legal, but probably not what was meant, as
//! Istio's validation and `istioctl analyze` warn) never refuse anything:
//! a file's are in [`RulesFile::warnings`], those across files come with
//! [`resolve_all`]'s result.
//!
//! Lines: serde does not place valid values, so `lines` indexes each
//! document's field paths by line with a second, event-level parse.
//!
//! # Modules
//!
//! In dependency order: each module uses only those above it (`lib` only
//! declares and re-exports).
//!
//! - `dto`: the YAML as written (serde shapes, strict), and the enums the
//!   DTOs deserialize (`Location`, `Resolution`, `SimpleLb`, ...); the
//!   `Rollout`'s DTOs also serialize (its spec digest).
//! - `error`: [`ConfigError`], [`Warning`], [`FieldPath`] and `fp!`.
//! - `names`: checks of DNS labels and names, host patterns, subnets, ports.
//! - `common`: names and types several kinds share ([`API_VERSIONS`],
//!   [`KINDS`], [`api_versions_of`], [`Protocol`], [`Labels`],
//!   [`RouteDestination`]).
//! - `lines`: field path -> line, per document (a second, event-level parse).
//! - `source`: [`Source`], where a resource came from, for its messages.
//! - `values`: checks of single values (durations, regexes, labels, headers,
//!   `exportTo`, `retryOn`).
//! - `check`: `Check`, the collector of one document's errors and warnings,
//!   with the checks every kind shares.
//! - `limits`: size, depth and node limits of a file, before it is parsed.
//! - [`http`]: VirtualService `http` and `tls` rules, checked (`types`,
//!   `route`, `matches`, `headers`, `fault`, `reply`, `tls`).
//! - `policy`: DestinationRule `trafficPolicy`, checked.
//! - `resource`: [`Resource`], one module per kind (`service_entry`,
//!   `workload_entry`, `destination_rule`, `virtual_service`, `gateway`,
//!   `rollout`), the envelope in `document`. The one use of a module below:
//!   `resource::rollout` checks a `Rollout`'s steps and analyses into the
//!   types of [`rollout`], which the model carries as they are.
//! - `file`: one rules file read and parsed ([`RulesFile`]), a directory.
//! - [`model`]: the validated [`RoutingModel`] the datapath and the L7 proxy
//!   consume.
//! - [`rollout`]: a resolved `Rollout`, which the agent's controller drives
//!   ([`RoutingModel::set_canary_weight`], `written_canary_weight`).
//! - [`labels`]: Istio's metric labels for a destination of the model.
//! - `placement`: which node serves which Gateway (a Gateway's `selector`
//!   against a node's labels, [`NodeLabels`]), and
//!   [`RoutingModel::for_node`].
//! - `gateway_api`: core `v1` `Service` and the Gateway API kinds
//!   (`Gateway`, `TCPRoute`, `HTTPRoute`), checked, and translated into
//!   the Istio resources `resolve` reads (docs/gateway-api.md).
//! - `resolve`: the checks across resources -> the model (`catalog`, `tcp`,
//!   `gateway`, `destination`, `http`, `rollout`).
//!
//! Tests only: `tests`, `rules_tests`, `rollout_tests`, and `istio_cases`, Istio's own
//! validation table tests and CRD fixtures for the five kinds, case by
//! case, with Istio's verdict and words.

mod check;
mod common;
mod dto;
mod error;
#[cfg(test)]
mod export_to_tests;
mod file;
mod gateway_api;
pub mod http;
#[cfg(test)]
mod istio_cases;
pub mod labels;
mod limits;
mod lines;
pub mod model;
mod names;
mod placement;
mod policy;
mod resolve;
mod resource;
pub mod rollout;
#[cfg(test)]
mod rollout_tests;
#[cfg(test)]
mod rules_tests;
#[cfg(test)]
mod service_entry_tests;
mod source;
#[cfg(test)]
mod tests;
mod timestamp;
mod values;
pub mod visibility;

pub use self::{
    common::{
        API_VERSIONS, KINDS, Labels, Protocol, ROLLOUT_API_VERSION, RouteDestination,
        api_versions_of,
    },
    dto::{Location, Resolution, SimpleLb},
    error::{ConfigError, FieldPath, ResourceId, Segment, Warning},
    file::{
        Documents, RulesFile, is_rules_file, load_dir, parse_file, parse_file_all,
        parse_file_all_up_to, parse_file_documents, read_file_up_to, read_rules_file, rules_text,
    },
    gateway_api::{
        CONTROLLER_NAME, CertificateError, GATEWAY_KIND, PrivateKeyPem, REDACTED,
        SERVED_GATEWAY_CLASS, STATUS_KINDS, Secret, TlsCertificate, gateway_class, kind_of, redact,
        set_gateway_class,
    },
    http::{
        AbortError, CorsPolicy, DelayKind, Delegate, DerivePort, DestinationActions, DirectBody,
        DirectResponse, Fault, FaultAbort, FaultDelay, HeaderOperations, Headers, HttpMatch,
        HttpRedirect, HttpRouteDestination, HttpRule, Mirror, RedirectPort, Retries, Rewrite,
        StringMatch, TlsMatch, TlsRule, UnmatchedPreflights,
    },
    limits::{
        DuplicateKey, MAX_DEPTH, MAX_ERRORS, MAX_FILE_BYTES, MAX_NODES, MAX_STATE_BYTES,
        check_limits, check_limits_up_to,
    },
    lines::{FileLines, LineIndex},
    placement::{NodeLabels, NodeLabelsError, NotServed, labels_text, selector_matches},
    policy::{
        ConnectionPool, H2UpgradePolicy, HashKey, HttpCookie, HttpSettings, LbPolicy, LoadBalancer,
        OutlierDetection, PortTrafficPolicy, TcpKeepalive, TcpSettings, TrafficPolicy,
    },
    resolve::{
        resolve, resolve_all, resolve_all_in, resolve_in, resolve_resources, resolve_resources_in,
    },
    resource::{
        DestinationRule, EndpointAddress, Gateway, GatewayPort, L4Match, Resource, RolloutResource,
        RolloutTarget, SecretRef, Server, ServerTlsMode, ServiceEntry, ServicePort, Subset,
        TargetRoute, TcpRule, VirtualService, WorkloadEndpoint, WorkloadEntry,
    },
    source::Source,
    timestamp::{format_timestamp, format_timestamp_millis, parse_timestamp},
    values::GRPC_STATUS,
};
#[cfg(doc)]
use crate::model::RoutingModel;
