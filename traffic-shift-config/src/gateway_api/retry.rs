//! An HTTPRoute rule's `retry` (the spec's `HTTPRouteRetry`: `codes`,
//! `attempts`, `backoff`), as Istio's controller writes it into the
//! VirtualService rule's `retries`: `attempts` retries (2 when absent, as
//! Istio's default), on connection failures (`connect-failure`,
//! `refused-stream`, and gRPC's `unavailable`, `cancelled`) and on the
//! `codes` given; `attempts: 0` retries nothing; `backoff` is the wait
//! between tries; `timeouts.backendRequest` is each try's timeout.

use std::time::Duration;

use super::{check::duration, dto};
use crate::{check::Check, error::FieldPath, http::Retries, resolve::default_retries};

/// A `retry`, checked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Retry {
    /// Retries after the first try.
    pub attempts: u32,
    /// The response codes that are retried (400..=599).
    pub codes: Vec<u16>,
    pub backoff: Option<Duration>,
}

impl Retry {
    /// The model's retries (`per_try_timeout`: `timeouts.backendRequest`).
    pub fn retries(&self, per_try_timeout: Option<Duration>) -> Retries {
        let retry_on = if self.attempts == 0 {
            Vec::new()
        } else {
            [
                "connect-failure",
                "refused-stream",
                "unavailable",
                "cancelled",
            ]
            .into_iter()
            .map(str::to_owned)
            .chain(self.codes.iter().map(u16::to_string))
            .collect()
        };
        Retries {
            attempts: self.attempts,
            per_try_timeout,
            retry_on,
            backoff: self.backoff,
            ..default_retries()
        }
    }
}

/// `retry` written at `base`, with the CRD's rules (each code 400 to 599,
/// `backoff` a Gateway API duration); `attempts` must not be negative.
pub(super) fn retry(
    cx: &mut Check,
    base: &FieldPath,
    written: dto::HttpRouteRetry,
) -> Option<Retry> {
    let errors = cx.errors.len();
    let mut codes = Vec::new();
    for (i, code) in written.codes.unwrap_or_default().into_iter().enumerate() {
        match u16::try_from(code) {
            Ok(code @ 400..=599) => codes.push(code),
            _ => cx.error(
                base.key("codes").index(i),
                format!("code {code} is not an error status the spec retries: use 400 to 599"),
            ),
        }
    }
    let attempts = match written.attempts {
        None => 2,
        Some(n) => u32::try_from(n).unwrap_or_else(|_| {
            cx.error(
                base.key("attempts"),
                format!("attempts {n} is not a number of retries: use 0 (none) or more"),
            );
            0
        }),
    };
    let backoff = written.backoff.and_then(|text| {
        let parsed = duration(&text);
        if parsed.is_none() {
            cx.error(
                base.key("backoff"),
                format!(
                    "backoff {text:?} is not a Gateway API duration: one to four numbers of at \
                     most 5 digits, each with a unit h, m, s or ms (100ms, 1s)"
                ),
            );
        }
        parsed
    });
    (cx.errors.len() == errors).then_some(Retry {
        attempts,
        codes,
        backoff,
    })
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::super::tests::mesh_routes;

    /// The suite's HTTPRouteRetry rules, and `attempts: 0`, as the model
    /// has them.
    #[test]
    fn retry_is_the_rules_retries() {
        let routes = mesh_routes(
            "  rules:
  - matches: [{path: {value: /three}}]
    retry: {codes: [500], attempts: 3, backoff: 100ms}
    timeouts: {backendRequest: 1s}
    backendRefs: [{name: web-v1, port: 80}]
  - matches: [{path: {value: /default}}]
    retry: {codes: [500, 502, 503, 504]}
    backendRefs: [{name: web-v1, port: 80}]
  - matches: [{path: {value: /none}}]
    retry: {attempts: 0, codes: [500]}
    backendRefs: [{name: web-v1, port: 80}]
",
        );
        let retries = |key: &str| {
            routes
                .iter()
                .find(|r| r.key == format!("default/web/{key}"))
                .unwrap_or_else(|| panic!("no route {key}"))
                .retries
                .clone()
        };
        let three = retries("rules[0]");
        assert_eq!(
            (
                three.attempts,
                three.retry_on.join(","),
                three.backoff,
                three.per_try_timeout
            ),
            (
                3,
                "connect-failure,refused-stream,unavailable,cancelled,500".to_owned(),
                Some(Duration::from_millis(100)),
                Some(Duration::from_secs(1))
            )
        );
        let default = retries("rules[1]");
        assert_eq!(
            (default.attempts, default.retry_on.join(",")),
            (
                2,
                "connect-failure,refused-stream,unavailable,cancelled,500,502,503,504".to_owned()
            ),
            "Istio's default: 2 attempts"
        );
        let none = retries("rules[2]");
        assert_eq!((none.attempts, none.retry_on.len()), (0, 0));
    }
}
