//! Which route takes what on a Gateway listener port, when several want
//! it: a `TCPRoute` takes the whole port (a TCP connection has nothing
//! else to choose a route by), a `TLSRoute` an SNI name. Routes are
//! claimed oldest first ([`super::merge::age`]: `creationTimestamp`, else
//! the time the agent first saw the route, then `namespace/name`), so the
//! first to claim keeps it, as the spec's tie-break says. A route left with
//! nothing on a parent is not accepted there (`Accepted` `False`, reason
//! `Conflicted`, naming the older route).

use std::collections::BTreeMap;

use super::status::Condition;
use crate::source::Source;

/// What each route took, by Gateway, port and SNI name (empty: the port).
#[derive(Default)]
pub(super) struct ListenerClaims {
    taken: BTreeMap<(String, u16, String), Source>,
}

impl ListenerClaims {
    /// Whether `route` takes `name` (empty: the whole port) on `port` of
    /// `gateway`: yes if no older route took it; if one did, says so in
    /// `lost`.
    pub(super) fn take(
        &mut self,
        (gateway, port): (&str, u16),
        name: &str,
        route: &Source,
        lost: &mut Vec<String>,
    ) -> bool {
        let owner = self
            .taken
            .entry((gateway.to_owned(), port, name.to_owned()))
            .or_insert_with(|| route.clone());
        if owner.id() == route.id() {
            return true;
        }
        let what = if name.is_empty() {
            String::new()
        } else {
            format!("SNI {name} on ")
        };
        lost.push(format!(
            "{what}Gateway {gateway} port {port} is taken by the older {}",
            owner.describe()
        ));
        false
    }
}

/// `Accepted` `False` for a parent where older routes took everything the
/// route wanted there. The spec defines no reason for it; `Conflicted` is
/// what implementations write. `among`: which routes compete for what;
/// `todo`: what the user can do.
pub(super) fn conflicted(lost: &[String], among: &str, todo: &str) -> Condition {
    Condition::accepted(
        "Conflicted",
        format!(
            "{}: of {among}, the oldest takes it (creationTimestamp, then namespace/name); {todo}",
            lost.join("; ")
        ),
    )
}
