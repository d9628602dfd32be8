//! `fault` of an `http[]` rule: delays and aborts (HTTP status, gRPC
//! status), with their percentages.

use super::types::{AbortError, DelayKind, Fault, FaultAbort, FaultDelay};
use crate::{check::Check, dto, error::FieldPath, values};

fn fault_percentage(
    cx: &mut Check,
    base: &FieldPath,
    written: Option<dto::Percent>,
) -> Option<f64> {
    let value = written?.value.unwrap_or(0.0);
    cx.ok(
        base.key("percentage").key("value"),
        values::percentage(value),
    )
}

pub(super) fn fault_injection(
    cx: &mut Check,
    base: &FieldPath,
    fault: dto::HttpFaultInjection,
) -> Option<Fault> {
    if fault.delay.is_none() && fault.abort.is_none() {
        cx.error(
            base.clone(),
            "HTTP fault injection must have an abort and/or a delay",
        );
        return None;
    }
    let delay = fault.delay.and_then(|delay| {
        let base = base.key("delay");
        let mut percentage = fault_percentage(cx, &base, delay.percentage);
        if let Some(percent) = delay.percent {
            cx.warn(
                base.key("percent"),
                "percent is deprecated: use percentage: {value: ...}",
            );
            percentage = percentage.or_else(|| {
                cx.ok(base.key("percent"), values::percent(percent))
                    .map(f64::from)
            });
        }
        let kind = match (delay.fixed_delay, delay.exponential_delay) {
            (Some(_), Some(_)) => {
                cx.error(
                    base.key("exponentialDelay"),
                    "set either fixedDelay or exponentialDelay, not both",
                );
                None
            }
            (Some(fixed), None) => cx
                .ok(base.key("fixedDelay"), values::duration(&fixed))
                .map(DelayKind::Fixed),
            (None, Some(exponential)) => {
                let duration = cx.ok(base.key("exponentialDelay"), values::duration(&exponential));
                cx.error(
                    base.key("exponentialDelay"),
                    "exponentialDelay not supported yet",
                );
                duration.map(DelayKind::Exponential)
            }
            (None, None) => {
                cx.error(
                    base.clone(),
                    "delay needs fixedDelay: how long to delay requests",
                );
                None
            }
        };
        kind.map(|delay| FaultDelay { delay, percentage })
    });
    let abort = fault
        .abort
        .map(|abort| fault_abort(cx, &base.key("abort"), abort));
    Some(Fault { delay, abort })
}

fn fault_abort(cx: &mut Check, base: &FieldPath, abort: dto::FaultAbort) -> FaultAbort {
    let percentage = fault_percentage(cx, base, abort.percentage);
    let set = [
        abort.http_status.is_some(),
        abort.grpc_status.is_some(),
        abort.http2_error.is_some(),
    ];
    if set.iter().filter(|set| **set).count() > 1 {
        cx.error(
            base.clone(),
            "set one of httpStatus, grpcStatus or http2Error",
        );
    }
    let error = if let Some(status) = abort.http_status {
        match u16::try_from(status) {
            Ok(status) if (200..=600).contains(&status) => Some(AbortError::HttpStatus(status)),
            _ => {
                cx.error(
                    base.key("httpStatus"),
                    format!("HTTP status {status} is not in range 200-599"),
                );
                None
            }
        }
    } else if let Some(status) = abort.grpc_status {
        if values::GRPC_STATUS.contains(&status.as_str()) {
            Some(AbortError::GrpcStatus(status))
        } else {
            cx.error(
                base.key("grpcStatus"),
                format!(
                    "gRPC status {status:?} is not supported. See \
                     https://github.com/grpc/grpc/blob/master/doc/statuscodes.md for a list \
                     of supported codes, for example 'NOT_FOUND'"
                ),
            );
            None
        }
    } else if abort.http2_error.is_some() {
        cx.error(
            base.key("http2Error"),
            "HTTP/2 abort fault injection not supported yet",
        );
        None
    } else {
        cx.warn(base.clone(), "abort configured, but error type not set");
        None
    };
    FaultAbort { error, percentage }
}
