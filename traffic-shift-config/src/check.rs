//! [`Check`]: the collector of one document's errors and warnings, with the
//! checks every kind shares (ports, labels, gateway names, destinations,
//! weights, `exportTo`).

use std::fmt;

use crate::{
    common::{Labels, RouteDestination},
    dto,
    error::{ConfigError, FieldPath, Warning, fp},
    names::{is_dns1123_label_any_case, port_number, validate_domain, validate_fqdn},
    source::Source,
    values,
};

/// What the checks of one resource gave: it and its warnings, or its
/// errors (all of them).
pub(crate) type Checked<T> = Result<(T, Vec<Warning>), Vec<ConfigError>>;

/// The checks of one document: errors do not stop them, so that every
/// error is reported at once. Istio's validation works the same way
/// (`AppendValidation`).
pub(crate) struct Check<'s> {
    source: &'s Source,
    pub errors: Vec<ConfigError>,
    pub warnings: Vec<Warning>,
}

impl<'s> Check<'s> {
    pub fn new(source: &'s Source) -> Self {
        Self {
            source,
            errors: Vec::new(),
            warnings: Vec::new(),
        }
    }

    /// The document being checked.
    pub fn source(&self) -> &'s Source {
        self.source
    }

    /// Records an error: a message, or a typed error's `Display`.
    pub fn error(&mut self, path: FieldPath, message: impl fmt::Display) {
        self.errors
            .push(self.source.error(path, message.to_string()));
    }

    pub fn warn(&mut self, path: FieldPath, message: impl fmt::Display) {
        self.warnings
            .push(self.source.warning(path, message.to_string()));
    }

    /// The value, or `None` with the message recorded at `path`.
    pub fn ok<T, E: fmt::Display>(&mut self, path: FieldPath, result: Result<T, E>) -> Option<T> {
        result.map_err(|error| self.error(path, error)).ok()
    }

    /// Istio's `ValidatePort`.
    pub fn port(&mut self, path: FieldPath, number: i64) -> Option<u16> {
        self.ok(path, port_number(number))
    }

    /// Every label of a `labels` / `sourceLabels` / selector map.
    pub fn labels(&mut self, path: &FieldPath, labels: &Labels) {
        for (key, value) in labels {
            if let Err(message) = values::label(key, value) {
                self.error(path.key(key), message);
            }
        }
    }

    /// Istio's `validateGatewayNames`: `name`, `namespace/name`, or the
    /// legacy `name.namespace[.svc.cluster.local]` (a warning).
    pub fn gateway_names(&mut self, path: &FieldPath, names: &[String]) {
        for (g, name) in names.iter().enumerate() {
            let path = path.index(g);
            match name.split_once('/') {
                None => {
                    if let Some((gateway, rest)) = name.split_once('.') {
                        let namespace = rest.split('.').next().unwrap_or(rest);
                        self.warn(
                            path.clone(),
                            format!(
                                "using legacy gatewayName format {name:?}; prefer the \
                                 <namespace>/<name> format: \"{namespace}/{gateway}\""
                            ),
                        );
                    }
                    if let Err(message) = validate_fqdn(name) {
                        self.error(path, message);
                    }
                }
                Some((namespace, gateway)) => {
                    if namespace.is_empty() || gateway.is_empty() {
                        self.error(
                            path.clone(),
                            "config namespace and gateway name cannot be empty",
                        );
                    }
                    if !is_dns1123_label_any_case(namespace) {
                        self.error(
                            path.clone(),
                            format!(
                                "invalid value for namespace: {namespace:?}: write \
                                 <namespace>/<name>, or the name alone for a Gateway in this \
                                 namespace"
                            ),
                        );
                    }
                    if !is_dns1123_label_any_case(gateway) {
                        self.error(path, format!("invalid value for gateway name: {gateway:?}"));
                    }
                }
            }
        }
    }

    /// A route's `destination` (`path` is the `destination` field), Istio's
    /// `validateDestination`; `weight` is left `None`.
    pub fn destination(
        &mut self,
        path: &FieldPath,
        destination: dto::Destination,
    ) -> Option<RouteDestination> {
        let errors_before = self.errors.len();
        let host = destination.host.unwrap_or_default();
        if host == "*" {
            self.error(
                path.key("host"),
                "invalid destination host *: name the ServiceEntry host to route to",
            );
        } else if host.is_empty() {
            self.error(
                path.key("host"),
                "empty domain name not allowed: set destination.host to a ServiceEntry host",
            );
        } else if let Err(message) = validate_domain(&host) {
            self.error(path.key("host"), message);
        }
        let subset = destination.subset.filter(|subset| !subset.is_empty());
        if let Some(subset) = &subset
            && !is_dns1123_label_any_case(subset)
        {
            self.error(
                path.key("subset"),
                format!("subset name is invalid: {subset}"),
            );
        }
        let port = destination.port.and_then(|port| {
            self.port(
                path.key("port").key("number"),
                port.number.unwrap_or_default(),
            )
        });
        (self.errors.len() == errors_before).then_some(RouteDestination {
            host,
            subset,
            port,
            weight: None,
        })
    }

    /// A route entry's `weight` (`path` is the entry): `Ok(None)` when
    /// absent; `Err(())` when invalid, and recorded.
    pub fn weight(&mut self, path: &FieldPath, weight: Option<i64>) -> Result<Option<u32>, ()> {
        let Some(weight) = weight else {
            return Ok(None);
        };
        match u32::try_from(weight) {
            Ok(weight) if i32::try_from(weight).is_ok() => Ok(Some(weight)),
            _ => {
                self.error(path.key("weight"), weight_message(weight));
                Err(())
            }
        }
    }

    /// Istio's weight total rule, and our warnings about it: several
    /// destinations may not all weigh 0; weights are relative (since Istio
    /// 1.15), so a total other than 100 is applied and reported.
    /// `weights[j]` is `weight()` of `route[j]`, for every entry.
    pub fn total_weight(&mut self, path: &FieldPath, weights: &[Result<Option<u32>, ()>]) {
        // An invalid weight is reported already; a total without it would
        // be wrong.
        let Ok(weights) = weights.iter().copied().collect::<Result<Vec<_>, ()>>() else {
            return;
        };
        let total: u64 = weights.iter().map(|w| u64::from(w.unwrap_or(0))).sum();
        match weights.as_slice() {
            [Some(weight)] if *weight != 100 => self.warn(
                path.index(0).key("weight"),
                format!(
                    "weight {weight} of the only destination is ignored: one destination gets \
                     all the traffic"
                ),
            ),
            [] | [_] => {}
            _ if total == 0 => self.error(
                path.clone(),
                "total destination weight = 0: give at least one destination a weight above 0",
            ),
            _ if total > u64::from(u32::MAX) => self.error(
                path.clone(),
                format!(
                    "total destination weight {total} is too large: weights are relative, scale \
                     them down"
                ),
            ),
            _ if total != 100 => {
                let shares: Vec<String> = weights
                    .iter()
                    .map(|w| format!("{}/{total}", w.unwrap_or(0)))
                    .collect();
                self.warn(
                    path.clone(),
                    format!(
                        "total destination weight is {total}, not 100: weights are relative, so \
                         the destinations get {} of the connections",
                        shares.join(", ")
                    ),
                );
            }
            _ => {}
        }
    }

    /// The `route` of a `tcp` or `tls` rule (`path` is the `route` field).
    pub fn route_destinations(
        &mut self,
        path: &FieldPath,
        routes: Vec<dto::RouteDestination>,
    ) -> Vec<RouteDestination> {
        let mut weights = Vec::with_capacity(routes.len());
        let mut valid = Vec::with_capacity(routes.len());
        for (j, route) in routes.into_iter().enumerate() {
            let entry = path.index(j);
            let weight = self.weight(&entry, route.weight);
            weights.push(weight);
            let Some(destination) = route.destination else {
                self.error(entry, "destination is required");
                continue;
            };
            if let Some(mut destination) = self.destination(&entry.key("destination"), destination)
            {
                destination.weight = weight.ok().flatten();
                valid.push(destination);
            }
        }
        self.total_weight(path, &weights);
        valid
    }

    /// Records `exportTo`'s problems (Istio's `validateExportTo`).
    pub fn export_to(&mut self, export_to: &[String], is_service_entry: bool) {
        let namespace = self.source.namespace.clone();
        for (i, message) in values::export_to(&namespace, export_to, is_service_entry) {
            self.error(fp!("spec.exportTo[{i}]"), message);
        }
    }

    /// The errors, or the warnings when there is none.
    pub fn finish(self) -> Result<Vec<Warning>, Vec<ConfigError>> {
        if self.errors.is_empty() {
            Ok(self.warnings)
        } else {
            Err(self.errors)
        }
    }
}

pub(crate) fn weight_message(weight: i64) -> String {
    if weight < 0 {
        format!("weight {weight} < 0")
    } else {
        format!(
            "weight {weight} is too large (at most {}): weights are relative, scale them down",
            i32::MAX
        )
    }
}
