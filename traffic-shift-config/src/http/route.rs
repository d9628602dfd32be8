//! One `http[]` rule (Istio's `validateHTTPRoute`): what may be set with
//! what, its destinations and mirrors, retries, rewrite and timeout.

use super::types::{
    Context, Delegate, HttpMatch, HttpRouteDestination, HttpRule, Mirror, Retries, Rewrite,
};
use super::{
    fault::fault_injection,
    headers::{authority_rewrite, cors_policy, header_changes},
    matches::http_match,
    reply::{direct_response, http_redirect},
};
use crate::{check::Check, dto, error::FieldPath, names::is_dns1123_label_any_case, values};

/// `spec.http[i]`.
pub(crate) fn http_rule(
    cx: &mut Check,
    context: &Context,
    i: usize,
    rule: dto::HttpRoute,
) -> Option<HttpRule> {
    let base = FieldPath::parse(&format!("spec.http[{i}]"));
    let errors_before = cx.errors.len();
    conflicts(cx, &base, context.delegate, &rule);

    let matches: Vec<HttpMatch> = rule
        .matches
        .unwrap_or_default()
        .into_iter()
        .enumerate()
        .filter_map(|(k, m)| http_match(cx, context, &base.key("match").index(k), m))
        .collect();

    let headers = header_changes(cx, &base.key("headers"), rule.headers);
    let cors_policy = rule
        .cors_policy
        .map(|cors| cors_policy(cx, &base.key("corsPolicy"), cors));
    let fault = rule
        .fault
        .and_then(|fault| fault_injection(cx, &base.key("fault"), fault));

    let (mirror, mirrors) = http_mirrors(
        cx,
        &base,
        rule.mirror,
        rule.mirrors,
        rule.mirror_percent,
        rule.mirror_percentage,
    );

    let redirect = rule
        .redirect
        .and_then(|redirect| http_redirect(cx, &base.key("redirect"), redirect, &matches));
    let direct_response = rule
        .direct_response
        .map(|response| direct_response(cx, &base.key("directResponse"), response));
    let retries = rule
        .retries
        .map(|retries| http_retries(cx, &base.key("retries"), retries));
    let rewrite = rule
        .rewrite
        .and_then(|rewrite| http_rewrite(cx, &base.key("rewrite"), rewrite));
    authority_rewrite(cx, &base, rewrite.as_ref(), &headers);

    let mut route = Vec::new();
    let mut weights = Vec::new();
    for (j, destination) in rule.route.unwrap_or_default().into_iter().enumerate() {
        let path = base.key("route").index(j);
        let headers = header_changes(cx, &path.key("headers"), destination.headers);
        let weight = cx.weight(&path, destination.weight);
        weights.push(weight);
        let Some(written) = destination.destination else {
            cx.error(path, "destination is required");
            continue;
        };
        if let Some(mut destination) = cx.destination(&path.key("destination"), written) {
            destination.weight = weight.ok().flatten();
            route.push(HttpRouteDestination {
                destination,
                headers,
                actions: None,
            });
        }
    }
    cx.total_weight(&base.key("route"), &weights);

    let timeout = rule
        .timeout
        .and_then(|timeout| cx.ok(base.key("timeout"), values::duration(&timeout)));
    let delegate = rule.delegate.map(|delegate| Delegate {
        name: delegate.name.unwrap_or_default(),
        namespace: delegate.namespace.filter(|namespace| !namespace.is_empty()),
    });
    if let Some(delegate) = &delegate {
        if delegate.name.is_empty() {
            cx.error(
                base.key("delegate").key("name"),
                "delegate name is required: name the delegate VirtualService",
            );
        }
        if let Some(namespace) = &delegate.namespace
            && !is_dns1123_label_any_case(namespace)
        {
            cx.error(
                base.key("delegate").key("namespace"),
                format!("invalid delegate namespace: {namespace:?}"),
            );
        }
    }

    (cx.errors.len() == errors_before).then_some(HttpRule {
        name: rule.name,
        matches,
        route,
        redirect,
        direct_response,
        delegate,
        rewrite,
        timeout,
        retries,
        fault,
        mirror,
        mirrors,
        cors_policy,
        headers,
    })
}

/// `mirror` (with `mirrorPercentage` / `mirrorPercent`) and `mirrors`.
fn http_mirrors(
    cx: &mut Check,
    base: &FieldPath,
    mirror: Option<dto::Destination>,
    written_mirrors: Option<Vec<dto::HttpMirrorPolicy>>,
    mirror_percent: Option<i64>,
    mirror_percentage: Option<dto::Percent>,
) -> (Option<Mirror>, Vec<Mirror>) {
    let mut mirrors = Vec::new();
    if mirror.is_some() && written_mirrors.is_some() {
        cx.error(
            base.key("mirrors"),
            "HTTP route cannot contain both mirror and mirrors",
        );
    }
    let mut percentage_of_mirror = None;
    if let Some(percent) = mirror_percent {
        cx.warn(
            base.key("mirrorPercent"),
            "using deprecated setting \"mirrorPercent\", use \"mirrorPercentage\" instead",
        );
        if percent > 100 {
            cx.error(
                base.key("mirrorPercent"),
                format!("mirror_percent must have a max value of 100 (it has {percent})"),
            );
        } else if percent < 0 {
            cx.error(
                base.key("mirrorPercent"),
                format!("mirror_percent must have a min value of 0 (it has {percent})"),
            );
        } else {
            percentage_of_mirror = Some(f64::from(u8::try_from(percent).unwrap_or(100)));
        }
    }
    if let Some(percentage) = mirror_percentage {
        let value = percentage.value.unwrap_or(0.0);
        let path = base.key("mirrorPercentage").key("value");
        if value > 100.0 {
            cx.error(
                path,
                format!("mirror_percentage must have a max value of 100 (it has {value})"),
            );
        } else if value < 0.0 {
            cx.error(
                path,
                format!("mirror_percentage must have a min value of 0 (it has {value})"),
            );
        } else {
            percentage_of_mirror = Some(value);
        }
    }
    let mirror = mirror.and_then(|mirror| {
        cx.destination(&base.key("mirror"), mirror)
            .map(|destination| Mirror {
                destination,
                percentage: percentage_of_mirror,
            })
    });
    for (k, mirror) in written_mirrors.unwrap_or_default().into_iter().enumerate() {
        let path = base.key("mirrors").index(k);
        let Some(destination) = mirror.destination else {
            cx.error(path, "destination is required for mirrors");
            continue;
        };
        let destination = cx.destination(&path.key("destination"), destination);
        let percentage = mirror.percentage.and_then(|percentage| {
            let value = percentage.value.unwrap_or(0.0);
            let path = path.key("percentage").key("value");
            if value > 100.0 {
                cx.error(
                    path,
                    format!("mirror percentage must have a max value of 100 (it has {value})"),
                );
                None
            } else if value < 0.0 {
                cx.error(
                    path,
                    format!("mirror percentage must have a min value of 0 (it has {value})"),
                );
                None
            } else {
                Some(value)
            }
        });
        mirrors.extend(destination.map(|destination| Mirror {
            destination,
            percentage,
        }));
    }

    (mirror, mirrors)
}

/// Istio's `validateHTTPRouteConflict`.
fn conflicts(cx: &mut Check, base: &FieldPath, delegate_vs: bool, rule: &dto::HttpRoute) {
    let name = rule.name.as_deref().unwrap_or_default();
    let has_route = rule.route.as_ref().is_some_and(|route| !route.is_empty());
    if !delegate_vs && rule.delegate.is_some() {
        // A root route: only delegate may be set.
        if rule.redirect.is_some() {
            cx.error(
                base.key("redirect"),
                format!("root HTTP route {name} must not specify redirect"),
            );
        }
        if rule.route.is_some() {
            cx.error(
                base.key("route"),
                format!("root HTTP route {name} must not specify route"),
            );
        }
        return;
    }
    if delegate_vs && rule.delegate.is_some() {
        cx.error(
            base.key("delegate"),
            "delegate HTTP route cannot contain delegate",
        );
    }
    if rule.redirect.is_some() {
        let conflicts = [
            (
                has_route,
                "route",
                "HTTP route cannot contain both route and redirect",
            ),
            (
                rule.fault.is_some(),
                "fault",
                "HTTP route cannot contain both fault and redirect",
            ),
            (
                rule.rewrite.is_some(),
                "rewrite",
                "HTTP route rule cannot contain both rewrite and redirect",
            ),
            (
                rule.direct_response.is_some(),
                "directResponse",
                "HTTP route rule cannot contain both direct_response and redirect",
            ),
        ];
        for (conflict, field, message) in conflicts {
            if conflict {
                cx.error(base.key(field), message);
            }
        }
    } else if rule.direct_response.is_some() {
        let conflicts = [
            (
                has_route,
                "route",
                "HTTP route cannot contain both route and direct_response",
            ),
            (
                rule.fault.is_some(),
                "fault",
                "HTTP route cannot contain both fault and direct_response",
            ),
            (
                rule.rewrite.is_some(),
                "rewrite",
                "HTTP route rule cannot contain both rewrite and direct_response",
            ),
        ];
        for (conflict, field, message) in conflicts {
            if conflict {
                cx.error(base.key(field), message);
            }
        }
    } else if !has_route {
        cx.error(
            base.clone(),
            "HTTP route, redirect or direct_response is required",
        );
    }
}

fn http_retries(cx: &mut Check, base: &FieldPath, retries: dto::HttpRetry) -> Retries {
    let attempts = retries.attempts.unwrap_or(0);
    let attempts = u32::try_from(attempts).unwrap_or_else(|_| {
        cx.error(base.key("attempts"), "attempts cannot be negative");
        0
    });
    let retry_on_text = retries.retry_on.unwrap_or_default();
    if attempts == 0
        && (retries.per_try_timeout.is_some()
            || !retry_on_text.is_empty()
            || retries.retry_remote_localities.is_some())
    {
        cx.error(
            base.key("attempts"),
            "http retry policy configured when attempts are set to 0 (disabled)",
        );
    }
    let per_try_timeout = retries
        .per_try_timeout
        .and_then(|text| cx.ok(base.key("perTryTimeout"), values::duration(&text)));
    let backoff = retries
        .backoff
        .and_then(|text| cx.ok(base.key("backoff"), values::duration(&text)));
    let mut retry_on = Vec::new();
    if !retry_on_text.is_empty() {
        for policy in retry_on_text.split(',') {
            match values::retry_on(policy) {
                Ok(()) => retry_on.push(policy.to_owned()),
                Err(message) => cx.error(base.key("retryOn"), message),
            }
        }
    }
    Retries {
        attempts,
        per_try_timeout,
        retry_on,
        retry_remote_localities: retries.retry_remote_localities,
        retry_ignore_previous_hosts: retries.retry_ignore_previous_hosts,
        backoff,
    }
}

fn http_rewrite(cx: &mut Check, base: &FieldPath, rewrite: dto::HttpRewrite) -> Option<Rewrite> {
    let uri = rewrite.uri.filter(|uri| !uri.is_empty());
    let authority = rewrite.authority.filter(|authority| !authority.is_empty());
    if uri.is_some() && rewrite.uri_regex_rewrite.is_some() {
        cx.error(
            base.key("uriRegexRewrite"),
            "rewrite may only contain one of URI or UriRegexRewrite",
        );
        return None;
    }
    if uri.is_none() && rewrite.uri_regex_rewrite.is_none() && authority.is_none() {
        cx.error(
            base.clone(),
            "rewrite must specify at least one of URI, UriRegexRewrite, or authority. Only one \
             of URI or UriRegexRewrite may be specified",
        );
        return None;
    }
    let uri_regex = match rewrite.uri_regex_rewrite {
        None => None,
        Some(regex) => {
            let path = base.key("uriRegexRewrite");
            let pattern = regex.pattern.unwrap_or_default();
            let replacement = regex.rewrite.unwrap_or_default();
            if pattern.is_empty() || replacement.is_empty() {
                cx.error(
                    path,
                    "UriRegexRewrite has errors: UriRegexRewrite requires both Rewrite and Match \
                     fields to be specified",
                );
                return None;
            }
            cx.ok(
                path.key("match"),
                values::regex(&pattern, "HTTPRewrite.UriRegexRewrite.Match")
                    .map_err(|message| format!("UriRegexRewrite has errors: {message}")),
            )?;
            Some((pattern, replacement))
        }
    };
    Some(Rewrite {
        uri,
        authority,
        uri_regex,
    })
}
