//! A route's `corsPolicy`, as Envoy's CORS filter applies it (the filter
//! runs before the router, so before the route's fault, redirect and
//! destinations). A request is a CORS request when it has an `Origin`;
//! a preflight when it is an `OPTIONS` with `Origin` and
//! `Access-Control-Request-Method`.
//!
//! - A preflight of an allowed origin is answered here, 200, with the
//!   origin, methods, headers, exposed headers, max age and credentials.
//! - A preflight of another origin goes on as any request
//!   (`unmatchedPreflights: FORWARD`, Istio's default), or is answered 200
//!   here without CORS headers (`IGNORE`, a Gateway API `CORS` filter).
//! - Any other answer to an allowed origin gets
//!   `Access-Control-Allow-Origin` (the origin itself, never `*`: Envoy
//!   echoes it, which the spec allows in every case and requires with
//!   credentials), `Access-Control-Allow-Credentials: true` when allowed,
//!   and `Access-Control-Expose-Headers`.
//!
//! `*` alone in `allowMethods` or `allowHeaders` is the Gateway API's
//! wildcard: answered `*`, or, with credentials (where the Fetch standard
//! reads `*` as a name, not a wildcard), the method or headers the
//! preflight asked for. With credentials, `*` is left out of the exposed
//! headers for the same reason.

use hyper::{
    HeaderMap, Method, Response, StatusCode,
    header::{self, HeaderValue},
};
use regex::Regex;
use traffic_shift_config::model::{CorsPolicy, UnmatchedPreflights};

use crate::{
    ProxyBody,
    local::empty_body,
    routes::{Matcher, RegexError},
};

/// A route's `corsPolicy`, its origins compiled.
#[derive(Debug)]
pub(crate) struct Cors {
    origins: Vec<Matcher>,
    policy: CorsPolicy,
}

/// What the policy makes of one request.
pub(crate) enum Verdict {
    /// Not a CORS request, or one of an origin not allowed: nothing to add.
    Pass,
    /// The proxy answers (a preflight).
    Answer(Response<ProxyBody>),
    /// A request of an allowed origin: the answer gets its headers.
    Allowed(HeaderValue),
}

impl Cors {
    pub(crate) fn build(
        policy: &CorsPolicy,
        regex: &impl Fn(&str) -> Result<Regex, RegexError>,
    ) -> Result<Self, RegexError> {
        Ok(Self {
            origins: policy
                .allow_origins
                .iter()
                .map(|origin| Matcher::build(origin, false, regex))
                .collect::<Result<_, _>>()?,
            policy: policy.clone(),
        })
    }

    /// What to do with a request of `method` with `headers`.
    pub(crate) fn verdict(&self, method: &Method, headers: &HeaderMap) -> Verdict {
        let Some(origin) = headers.get(header::ORIGIN) else {
            return Verdict::Pass;
        };
        let preflight = method == Method::OPTIONS
            && headers
                .get(header::ACCESS_CONTROL_REQUEST_METHOD)
                .is_some_and(|m| !m.is_empty());
        let allowed = origin
            .to_str()
            .is_ok_and(|origin| self.origins.iter().any(|m| m.test(origin)));
        match (preflight, allowed) {
            (true, true) => Verdict::Answer(self.preflight(origin, headers)),
            (true, false) => match self.policy.unmatched_preflights {
                UnmatchedPreflights::Forward => Verdict::Pass,
                UnmatchedPreflights::Ignore => Verdict::Answer(ok()),
            },
            (false, true) => Verdict::Allowed(origin.clone()),
            (false, false) => Verdict::Pass,
        }
    }

    /// The answer to a preflight of an allowed `origin`.
    fn preflight(&self, origin: &HeaderValue, request: &HeaderMap) -> Response<ProxyBody> {
        let mut response = ok();
        let credentials = self.credentials();
        let headers = response.headers_mut();
        headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin.clone());
        if credentials {
            headers.insert(
                header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
                HeaderValue::from_static("true"),
            );
        }
        let asked = |name| request.get(name).cloned();
        let methods = self.listed(
            &self.policy.allow_methods,
            asked(header::ACCESS_CONTROL_REQUEST_METHOD),
        );
        if let Some(methods) = methods {
            headers.insert(header::ACCESS_CONTROL_ALLOW_METHODS, methods);
        }
        let allowed = self.listed(
            &self.policy.allow_headers,
            asked(header::ACCESS_CONTROL_REQUEST_HEADERS),
        );
        if let Some(allowed) = allowed {
            headers.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, allowed);
        }
        self.expose(headers);
        if let Some(max_age) = self.policy.max_age {
            headers.insert(header::ACCESS_CONTROL_MAX_AGE, max_age.as_secs().into());
        }
        response
    }

    /// The headers an answer to a request of an allowed `origin` gets.
    pub(crate) fn allowed(&self, origin: HeaderValue, headers: &mut HeaderMap) {
        headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
        if self.credentials() {
            headers.insert(
                header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
                HeaderValue::from_static("true"),
            );
        }
        self.expose(headers);
    }

    fn credentials(&self) -> bool {
        self.policy.allow_credentials == Some(true)
    }

    /// `allowMethods` or `allowHeaders` as a header value: the list, or for
    /// `*` alone with credentials what the preflight `asked` (nothing when
    /// it did not ask); `None`: no header.
    fn listed(&self, list: &[String], asked: Option<HeaderValue>) -> Option<HeaderValue> {
        if list.is_empty() {
            return None;
        }
        if self.credentials() && list.iter().any(|item| item == "*") {
            return asked;
        }
        HeaderValue::from_str(&list.join(",")).ok()
    }

    fn expose(&self, headers: &mut HeaderMap) {
        let credentials = self.credentials();
        let exposed: Vec<&str> = self
            .policy
            .expose_headers
            .iter()
            .map(String::as_str)
            .filter(|name| !(credentials && *name == "*"))
            .collect();
        if !exposed.is_empty()
            && let Ok(value) = HeaderValue::from_str(&exposed.join(","))
        {
            headers.insert(header::ACCESS_CONTROL_EXPOSE_HEADERS, value);
        }
    }
}

/// A preflight's answer: 200, no body.
fn ok() -> Response<ProxyBody> {
    let mut response = Response::new(empty_body());
    *response.status_mut() = StatusCode::OK;
    response
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use traffic_shift_config::model::StringMatch;

    use super::*;

    fn cors(policy: &CorsPolicy) -> Cors {
        Cors::build(policy, &|pattern| {
            Regex::new(&format!("^(?:{pattern})$")).map_err(|source| RegexError {
                route: "r".into(),
                pattern: pattern.into(),
                source,
            })
        })
        .expect("compiles")
    }

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        pairs
            .iter()
            .map(|(name, value)| {
                (
                    header::HeaderName::from_static(name),
                    HeaderValue::from_static(value),
                )
            })
            .collect()
    }

    fn get<'a>(response: &'a Response<ProxyBody>, name: &str) -> Option<&'a str> {
        response.headers().get(name).and_then(|v| v.to_str().ok())
    }

    const PREFLIGHT: &[(&str, &str)] = &[
        ("origin", "https://a.example"),
        ("access-control-request-method", "DELETE"),
        ("access-control-request-headers", "x-a,x-b"),
    ];

    fn wildcards(credentials: bool) -> CorsPolicy {
        CorsPolicy {
            allow_origins: vec![StringMatch::Regex("https://.*".into())],
            allow_methods: vec!["*".into()],
            allow_headers: vec!["*".into()],
            expose_headers: vec!["*".into(), "x-c".into()],
            max_age: Some(Duration::from_secs(61)),
            allow_credentials: credentials.then_some(true),
            unmatched_preflights: UnmatchedPreflights::Forward,
        }
    }

    #[test]
    fn wildcards_are_answered_as_asked_with_credentials_and_as_star_without() {
        let Verdict::Answer(with) =
            cors(&wildcards(true)).verdict(&Method::OPTIONS, &headers(PREFLIGHT))
        else {
            panic!("a preflight of an allowed origin is answered");
        };
        assert_eq!(with.status(), StatusCode::OK);
        assert_eq!(
            get(&with, "access-control-allow-origin"),
            Some("https://a.example")
        );
        assert_eq!(get(&with, "access-control-allow-methods"), Some("DELETE"));
        assert_eq!(get(&with, "access-control-allow-headers"), Some("x-a,x-b"));
        assert_eq!(get(&with, "access-control-expose-headers"), Some("x-c"));
        assert_eq!(get(&with, "access-control-allow-credentials"), Some("true"));
        assert_eq!(get(&with, "access-control-max-age"), Some("61"));
        let Verdict::Answer(without) =
            cors(&wildcards(false)).verdict(&Method::OPTIONS, &headers(PREFLIGHT))
        else {
            panic!("a preflight of an allowed origin is answered");
        };
        assert_eq!(get(&without, "access-control-allow-methods"), Some("*"));
        assert_eq!(get(&without, "access-control-allow-headers"), Some("*"));
        assert_eq!(
            get(&without, "access-control-expose-headers"),
            Some("*,x-c")
        );
        assert_eq!(get(&without, "access-control-allow-credentials"), None);
    }

    #[test]
    fn an_unmatched_preflight_goes_on_or_is_answered_without_cors_headers() {
        let other = headers(&[
            ("origin", "http://other.example"),
            ("access-control-request-method", "GET"),
        ]);
        let forward = cors(&wildcards(false));
        assert!(matches!(
            forward.verdict(&Method::OPTIONS, &other),
            Verdict::Pass
        ));
        let ignore = cors(&CorsPolicy {
            unmatched_preflights: UnmatchedPreflights::Ignore,
            ..wildcards(false)
        });
        let Verdict::Answer(answer) = ignore.verdict(&Method::OPTIONS, &other) else {
            panic!("IGNORE answers an unmatched preflight");
        };
        assert_eq!(answer.status(), StatusCode::OK);
        assert!(answer.headers().is_empty(), "{:?}", answer.headers());
    }

    #[test]
    fn a_request_without_origin_or_of_another_origin_is_left_alone() {
        let policy = cors(&wildcards(true));
        assert!(matches!(
            policy.verdict(&Method::GET, &headers(&[])),
            Verdict::Pass
        ));
        assert!(matches!(
            policy.verdict(
                &Method::GET,
                &headers(&[("origin", "http://other.example")])
            ),
            Verdict::Pass
        ));
        // Not a preflight without access-control-request-method: allowed.
        let Verdict::Allowed(origin) = policy.verdict(
            &Method::OPTIONS,
            &headers(&[("origin", "https://a.example")]),
        ) else {
            panic!("an OPTIONS without a request method is a simple request");
        };
        let mut answer = HeaderMap::new();
        policy.allowed(origin, &mut answer);
        assert_eq!(answer["access-control-allow-origin"], "https://a.example");
        assert_eq!(answer["access-control-allow-credentials"], "true");
        assert_eq!(answer["access-control-expose-headers"], "x-c");
    }
}
