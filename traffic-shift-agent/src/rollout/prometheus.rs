//! The `prometheus` metric: one PromQL instant query
//! (`GET <address>/api/v1/query?query=...`) whose value is a scalar or a
//! vector of exactly one sample. No series, several, NaN or an error is
//! no value (the interval is inconclusive), never zero.

use std::{fmt::Write as _, time::Duration};

use http_body_util::{BodyExt as _, Empty};
use hyper::body::Bytes;
use hyper_util::{client::legacy::Client, rt::TokioExecutor};

use super::analysis::QueryValue;

/// How long a query may take.
pub const QUERY_TIMEOUT: Duration = Duration::from_secs(5);

/// The largest answer read.
const MAX_ANSWER_BYTES: usize = 1 << 20;

/// Runs `query` against the Prometheus at `address` (`http://host:port`).
pub async fn query(address: &str, query: &str) -> QueryValue {
    match tokio::time::timeout(QUERY_TIMEOUT, run(address, query)).await {
        Ok(value) => value,
        Err(_) => Err(format!(
            "Prometheus at {address} did not answer within {}s",
            QUERY_TIMEOUT.as_secs()
        )),
    }
}

async fn run(address: &str, query: &str) -> QueryValue {
    let uri = format!(
        "{}/api/v1/query?query={}",
        address.trim_end_matches('/'),
        encode(query)
    );
    let uri: hyper::Uri = uri
        .parse()
        .map_err(|e| format!("invalid Prometheus address {address}: {e}"))?;
    let client: Client<_, Empty<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let response = client
        .get(uri)
        .await
        .map_err(|e| format!("cannot query Prometheus at {address}: {e}"))?;
    let status = response.status();
    let body = http_body_util::Limited::new(response.into_body(), MAX_ANSWER_BYTES)
        .collect()
        .await
        .map_err(|e| format!("cannot read Prometheus' answer: {e}"))?
        .to_bytes();
    let json: serde_json::Value = serde_json::from_slice(&body)
        .map_err(|e| format!("Prometheus answered {status} with something not JSON: {e}"))?;
    value_of(&json)
}

/// The value of an instant query's answer.
pub fn value_of(answer: &serde_json::Value) -> QueryValue {
    if answer["status"] != "success" {
        return Err(format!(
            "the query failed: {}",
            answer["error"].as_str().unwrap_or("no error given")
        ));
    }
    let data = &answer["data"];
    let sample = match data["resultType"].as_str() {
        Some("scalar") => &data["result"],
        Some("vector") => {
            let result = data["result"].as_array().map_or(&[][..], Vec::as_slice);
            match result {
                [one] => &one["value"],
                [] => return Err("the query returned no series".to_owned()),
                many => {
                    return Err(format!(
                        "the query returned {} series; it must return one (aggregate it, e.g. with sum())",
                        many.len()
                    ));
                }
            }
        }
        other => {
            return Err(format!(
                "the query returned a {}; it must return a scalar or one series",
                other.unwrap_or("result of no type")
            ));
        }
    };
    sample[1]
        .as_str()
        .and_then(|v| v.parse::<f64>().ok())
        .ok_or_else(|| format!("cannot read the query's value from {sample}"))
}

/// `application/x-www-form-urlencoded` for a query parameter: every byte
/// but the unreserved ones as `%XX` (the tests' Prometheus client too).
pub fn encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len() * 3);
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || b"-_.~".contains(&byte) {
            out.push(char::from(byte));
        } else {
            let _ = write!(out, "%{byte:02X}");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn a_scalar_or_one_series_has_a_value_and_nothing_else_does() {
        let vector = |result: serde_json::Value| json!({"status": "success", "data": {"resultType": "vector", "result": result}});
        assert_eq!(
            value_of(&vector(json!([{"metric": {}, "value": [1.0, "0.25"]}]))),
            Ok(0.25)
        );
        assert_eq!(
            value_of(
                &json!({"status": "success", "data": {"resultType": "scalar", "result": [1.0, "3"]}})
            ),
            Ok(3.0)
        );
        assert_eq!(
            value_of(&vector(json!([]))),
            Err("the query returned no series".to_owned())
        );
        assert!(
            value_of(&vector(json!([{"value": [1, "1"]}, {"value": [1, "2"]}])))
                .unwrap_err()
                .contains("returned 2 series")
        );
        assert!(
            value_of(&json!({"status": "error", "error": "parse error"}))
                .unwrap_err()
                .contains("parse error")
        );
        // NaN parses: the analysis calls it no value.
        assert!(
            value_of(&vector(json!([{"value": [1, "NaN"]}])))
                .unwrap()
                .is_nan()
        );
    }

    #[test]
    fn queries_are_encoded() {
        assert_eq!(encode("sum(x{a=\"b\"})"), "sum%28x%7Ba%3D%22b%22%7D%29");
    }
}
