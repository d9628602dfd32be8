//! The agent's side of the admin socket ([`crate::admin`]): `apply`,
//! `delete`, `get` and `version`, answered in the agent loop, so they are
//! serialized with each other and with the rescans of the rules directory.
//!
//! `get` lists the store's resources too (`--store`), each with its key as
//! its source.
//!
//! `apply` and `delete` change the applied set ([`crate::applied`]) all or
//! nothing: the whole resulting rule set (the rules directory's files and
//! the applied set) is resolved and compiled first, and refused with every
//! error; then the new applied set is persisted, then written to the
//! kernel in one update (if the kernel refuses, the state file is put back).
//! A change is answered only once it is persisted and in force.

use std::path::Path;

use tokio::sync::mpsc;

use traffic_shift_config as config;

use crate::{
    admin::{AdminServer, Call, FileText, Item, Request, Response},
    applied::{self, Key, Plan},
};

use super::{Agent, AgentError, AgentOptions, InstallError};

/// At start, before the kernel is touched (a state file that cannot be
/// read stops the start there): the applied set from `--state-dir`, and
/// the admin socket, served from now on (requests wait for the loop).
pub(super) fn open(
    options: &AgentOptions,
) -> Result<(applied::Store, AdminServer, mpsc::Receiver<Call>), AgentError> {
    let store = applied::Store::open(&options.state_dir)?;
    let (server, calls) = AdminServer::bind(&options.admin_socket)?;
    Ok((store, server, calls))
}

impl Agent {
    /// Answers one admin request.
    pub(super) fn serve_admin(&mut self, call: Call) {
        // In a fleet, a rollout's command is answered once the driver
        // applied it (see `fleet_rollouts`).
        let Some(call) = self.fleet_rollout_command(call) else {
            return;
        };
        let started = std::time::Instant::now();
        let response = match &call.request {
            Request::Apply { files, dry_run } => {
                let plan = applied::plan_apply(
                    self.sources.applied.entries(),
                    files,
                    |key| self.directory_owner(key),
                    crate::cli::now_ms(),
                );
                self.change_applied(plan, files, *dry_run)
            }
            Request::Delete {
                files,
                ignore_not_found,
                dry_run,
            } => {
                let plan = applied::plan_delete(
                    self.sources.applied.entries(),
                    files,
                    |key| self.directory_owner(key),
                    *ignore_not_found,
                );
                self.change_applied(plan, files, *dry_run)
            }
            Request::Get { kind } => self.resources(kind.as_deref()),
            Request::Version => Response::Version {
                version: env!("CARGO_PKG_VERSION").to_owned(),
            },
            Request::Rollouts { name } => self.rollout_statuses(name.as_deref()),
            Request::Rollout { name, action } => self.rollout_command(name, *action),
        };
        if let Response::Refused { errors } = &response {
            tracing::warn!(
                command = call.request.name(),
                pid = call.pid,
                errors = errors.len(),
                "admin request refused: {}",
                errors.join("; ")
            );
            self.observer.shared().apply_errors += 1;
        }
        if let Response::Changed {
            changes, dry_run, ..
        } = &response
        {
            tracing::info!(
                command = call.request.name(),
                pid = call.pid,
                resources = changes.len(),
                dry_run,
                took_ms = started.elapsed().as_millis(),
                "admin request done"
            );
        }
        call.reply(response);
    }

    /// The rules file that defines `key`, if the rules directory does.
    fn directory_owner(&self, key: &Key) -> Option<String> {
        self.sources.accepted.iter().find_map(|(path, (_, file))| {
            // Compared in place: a key made of each directory resource
            // for each resource applied was two strings allocated per pair.
            file.resources
                .iter()
                .any(|r| {
                    r.kind() == key.kind && r.namespace() == key.namespace && r.name() == key.name
                })
                .then(|| path.display().to_string())
        })
    }

    /// Puts a planned applied set in force, or says why not.
    fn change_applied(
        &mut self,
        plan: Result<Plan, Vec<String>>,
        files: &[FileText],
        dry_run: bool,
    ) -> Response {
        let plan = match plan {
            Ok(plan) => plan,
            Err(errors) => return Response::Refused { errors },
        };
        let resources = self
            .sources
            .resources_with(plan.entries.values().map(|e| &*e.resource));
        let (model, across) = config::resolve_resources_in(resources, self.namespace.as_deref());
        let mut warnings = plan.warnings.clone();
        // Only those about the files given: the rest of the rules' warnings
        // are the agent log's.
        warnings.extend(
            across
                .iter()
                .filter(|w| files.iter().any(|f| Path::new(&f.path) == w.file))
                .map(ToString::to_string),
        );
        let model = match model {
            Ok(model) => model,
            Err(errors) => {
                return Response::Refused {
                    errors: errors.iter().map(ToString::to_string).collect(),
                };
            }
        };
        let install = !dry_run && plan.changes_anything();
        // A change that goes in is checked by `install` itself, which
        // compiles the tables and refuses before it writes anything (the
        // state file is put back): compiled once, not twice.
        if !install && let Err(error) = self.check(&model) {
            return Response::Refused {
                errors: vec![error.to_string()],
            };
        }
        if !install {
            return Response::Changed {
                changes: plan.changes,
                warnings,
                dry_run,
            };
        }
        // Persisted, then in force: the state file is written while the
        // change compiles, and `put_in_force` waits for it before it
        // writes the kernel.
        self.persisting = Some(self.sources.applied.write_in_background(&plan.entries));
        let what = applied::names(&plan.changes);
        let installed = self.install(model, &what);
        // Refused before the wait: the file may be written all the same.
        let written = self.persisting.take().map(applied::PendingWrite::wait);
        if let Err(error) = installed {
            // The kernel keeps the rules in force before: so does the file
            // (unless it was never written).
            let undo = !matches!(error, InstallError::State(_)) && !matches!(written, Some(Err(_)));
            if undo && let Err(err) = self.sources.applied.rewrite() {
                tracing::error!(%err, "cannot put the state file back after a failed kernel update: it holds resources that are not in force");
            }
            return Response::Refused {
                errors: vec![error.to_string()],
            };
        }
        self.sources.applied.adopt(plan.entries);
        for change in plan.changes.iter().take(applied::LOGGED) {
            tracing::info!(
                resource = %applied::display_name(&change.kind, &change.name),
                namespace = %change.namespace,
                "{}", change.action.as_str()
            );
        }
        if plan.changes.len() > applied::LOGGED {
            tracing::info!(
                "and {} more resources changed",
                plan.changes.len() - applied::LOGGED
            );
        }
        // Rules files refused before may go in now (one may have waited
        // for a ServiceEntry just applied).
        self.sources.retry_refused();
        self.rescan();
        Response::Changed {
            changes: plan.changes,
            warnings,
            dry_run,
        }
    }

    /// At start, after the first rescan: if no rules file went in (none, or
    /// all refused), the applied set has not either; put it in force alone.
    pub(super) fn restore_applied(&mut self, server: &AdminServer) {
        tracing::info!(
            socket = %server.path().display(),
            state = %self.sources.applied.path().display(),
            applied = self.sources.applied.entries().len(),
            "admin socket ready"
        );
        if self.sources.applied.entries().is_empty() || self.generation > 0 {
            return;
        }
        // No rules file went in (generation 0): the directory adds nothing.
        let rules = self.sources.rule_set(None, None, None);
        let result = config::resolve_all_in(&rules, self.namespace.as_deref())
            .0
            .map_err(|errors| {
                errors
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join("; ")
            })
            .and_then(|model| {
                self.install(model, "applied (restored)")
                    .map_err(|err| err.to_string())
            });
        match result {
            Ok(()) => tracing::info!(
                file = %self.sources.applied.path().display(),
                resources = self.sources.applied.entries().len(),
                "applied resources restored"
            ),
            Err(err) => tracing::error!(
                file = %self.sources.applied.path().display(),
                "the applied resources cannot be put in force: {err}; fix the rules directory, or `traffic-shift delete` them"
            ),
        }
    }

    /// `get`: the resources in force, of `kind` or all, sorted by
    /// namespace, name and kind.
    fn resources(&self, kind: Option<&str>) -> Response {
        let wanted = |k: &str| kind.is_none_or(|kind| kind == k);
        // Read back from the state file.
        let applied: Result<Vec<Item>, applied::ReadBackError> = self
            .sources
            .applied
            .entries()
            .iter()
            .filter(|(key, _)| wanted(key.kind))
            .map(|(key, entry)| {
                Ok(Item::new(
                    (key.kind, &key.namespace, &key.name),
                    "apply".to_owned(),
                    Some(entry.created_ms),
                    entry.document.to_json()?,
                ))
            })
            .collect();
        let mut items = match applied {
            Ok(items) => items,
            Err(err) => {
                return Response::Error {
                    message: err.to_string(),
                };
            }
        };
        if let Some(fleet) = &self.sources.fleet {
            items.extend(
                fleet
                    .entries
                    .iter()
                    .filter(|(key, _)| wanted(key.kind))
                    .map(|(key, entry)| {
                        let source =
                            crate::fleet::source_path(&fleet.prefix, &crate::fleet::store_key(key));
                        Item::new(
                            (key.kind, &key.namespace, &key.name),
                            source.display().to_string(),
                            Some(entry.created_ms),
                            entry
                                .document
                                .to_json()
                                .expect("the store's documents are held in memory"),
                        )
                    }),
            );
        }
        for (path, (text, file)) in &self.sources.accepted {
            let documents = applied::documents(text);
            let modified = std::fs::metadata(path)
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
            for resource in file.resources.iter().filter(|r| wanted(r.kind())) {
                let document = documents
                    .get(resource.source().document - 1)
                    .cloned()
                    .flatten()
                    .and_then(|d| applied::normalize(d, resource.namespace()).ok())
                    .unwrap_or_default();
                items.push(Item::new(
                    (resource.kind(), resource.namespace(), resource.name()),
                    path.display().to_string(),
                    modified,
                    document,
                ));
            }
        }
        // The Gateway API kinds' status, as the rules in force resolved it.
        for item in &mut items {
            if !config::STATUS_KINDS.contains(&item.kind.as_str()) {
                continue;
            }
            let key = config::model::StatusKey {
                kind: item.kind.clone(),
                namespace: item.namespace.clone(),
                name: item.name.clone(),
            };
            if let (Some(status), Some(document)) = (
                self.model.gateway_api_status.get(&key),
                item.document.as_object_mut(),
            ) {
                let mut status = status.clone();
                self.sources.applied.transitions().stamp(&key, &mut status);
                document.insert("status".to_owned(), status);
            }
        }
        items.sort_by(|a, b| {
            (&a.namespace, &a.name, &a.kind).cmp(&(&b.namespace, &b.name, &b.kind))
        });
        Response::Resources { items }
    }
}
