//! Local replies of an `http[]` rule: `redirect` and `directResponse`.

use super::types::{
    DirectBody, DirectResponse, HttpMatch, HttpRedirect, RedirectPort, StringMatch,
};
use crate::{check::Check, dto, error::FieldPath};

pub(super) fn http_redirect(
    cx: &mut Check,
    base: &FieldPath,
    redirect: dto::HttpRedirect,
    matches: &[HttpMatch],
) -> Option<HttpRedirect> {
    let uri = redirect.uri.filter(|uri| !uri.is_empty());
    let prefix_rewrite = redirect.prefix_rewrite.filter(|prefix| !prefix.is_empty());
    let authority = redirect.authority.filter(|authority| !authority.is_empty());
    let scheme = redirect.scheme.filter(|scheme| !scheme.is_empty());
    let errors_before = cx.errors.len();
    if uri.is_some() && prefix_rewrite.is_some() {
        cx.error(
            base.key("prefixRewrite"),
            "redirect may only specify one of uri or prefix_rewrite",
        );
    }
    if prefix_rewrite.is_some()
        && matches.iter().any(|m| {
            m.uri
                .as_ref()
                .is_some_and(|uri| !matches!(uri, StringMatch::Prefix(_)))
        })
    {
        cx.error(
            base.key("prefixRewrite"),
            "redirect prefix_rewrite requires all URI matches to use prefix match type",
        );
    }
    let port = match (redirect.port, redirect.derive_port) {
        (Some(_), Some(_)) => {
            cx.error(
                base.key("derivePort"),
                "set either port or derivePort, not both",
            );
            None
        }
        (Some(number), None) => cx.port(base.key("port"), number).map(RedirectPort::Number),
        (None, Some(derive)) => Some(RedirectPort::Derive(derive)),
        (None, None) => None,
    };
    if uri.is_none()
        && prefix_rewrite.is_none()
        && authority.is_none()
        && port.is_none()
        && scheme.is_none()
    {
        cx.error(
            base.clone(),
            "redirect must specify URI, authority, scheme, or port",
        );
    }
    let redirect_code = match redirect.redirect_code {
        None | Some(0) => 301,
        Some(code) => match u16::try_from(code) {
            Ok(code) if (300..=399).contains(&code) => code,
            _ => {
                cx.error(
                    base.key("redirectCode"),
                    format!("{code} is not a valid redirect code, must be 3xx"),
                );
                301
            }
        },
    };
    if let Some(scheme) = &scheme
        && scheme != "http"
        && scheme != "https"
    {
        cx.error(
            base.key("scheme"),
            "invalid redirect scheme, must be \"http\" or \"https\"",
        );
    }
    (cx.errors.len() == errors_before).then_some(HttpRedirect {
        uri,
        prefix_rewrite,
        uri_regex: None,
        authority,
        port,
        scheme,
        redirect_code,
    })
}

pub(super) fn direct_response(
    cx: &mut Check,
    base: &FieldPath,
    response: dto::HttpDirectResponse,
) -> DirectResponse {
    let status = response.status.unwrap_or(0);
    let status = match u16::try_from(status) {
        Ok(status) if (200..=600).contains(&status) => status,
        _ => {
            cx.error(
                base.key("status"),
                format!("HTTP status {status} is not in range 200-599"),
            );
            0
        }
    };
    let body = response
        .body
        .and_then(|body| match (body.string, body.bytes) {
            (Some(_), Some(_)) => {
                cx.error(base.key("body"), "set either string or bytes, not both");
                None
            }
            (Some(text), None) => Some(DirectBody::String(text)),
            (None, Some(bytes)) => Some(DirectBody::Bytes(bytes)),
            (None, None) => None,
        });
    let size = match &body {
        Some(DirectBody::String(text)) => text.len(),
        // Base64: three bytes per four characters.
        Some(DirectBody::Bytes(text)) => text.len() / 4 * 3,
        None => 0,
    };
    if size > 1 << 20 {
        cx.error(
            base.key("body"),
            "large direct_responses may impact control plane performance, must be less than 1MB",
        );
    } else if size > 100 << 10 {
        cx.warn(
            base.key("body"),
            "large direct_responses may impact control plane performance",
        );
    }
    DirectResponse { status, body }
}
