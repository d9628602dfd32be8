//! Putting a resolved model in force, all or nothing, kernel and proxy
//! together:
//!
//! 1. everything that can refuse the change runs first and changes
//!    nothing: the kernel tables compiled for this node
//!    ([`Kernel::plan`](super::kernel::Kernel::plan)), the L7 proxy's
//!    gateway sockets bound and its configuration built
//!    ([`L7::prepare`](super::l7::L7::prepare));
//! 2. the kernel is written in one update (the only step left that can
//!    fail: then nothing else changes);
//! 3. the proxy serves its new configuration (cannot fail), and the rest
//!    of the agent (health probes, drain, metrics) follows the new model.

use traffic_shift_config::model::RoutingModel;

use super::{Agent, error::InstallError};

impl Agent {
    /// Puts `model` (the fleet's, as resolved, with the rollouts' weights:
    /// see [`Agent::install`]) in force as far as this node serves it
    /// ([`RoutingModel::for_node`]); `what` names the change in the log. On
    /// error the rules in force before stay, in the kernel and in the
    /// proxy.
    pub(super) fn put_in_force(
        &mut self,
        model: RoutingModel,
        what: &str,
    ) -> Result<(), InstallError> {
        let (model, not_served) = model.for_node(self.node_labels.as_ref());
        let usable = self.health.usable(&model);
        let kernel = self.kernel.plan(&model, &usable, &self.l7.addrs)?;
        let l7 = self.l7.prepare(&model, &usable)?;
        // An apply's state file, written meanwhile, is on disk before the
        // kernel changes (a change is persisted, then in force).
        if let Some(write) = self.persisting.take() {
            write.wait()?;
        }
        let report = self.kernel.write(&kernel)?;
        self.l7.commit(l7);
        self.generation += 1;
        tracing::info!(
            generation = self.generation,
            files = %what,
            routes_added = report.routes_added.len(),
            routes_changed = report.routes_changed.len(),
            routes_removed = report.routes_removed.len(),
            "rules applied"
        );
        // One line per route, for the first few (10 000 lines for 10 000
        // services told little and took time).
        let changed = report.routes_added.iter().chain(&report.routes_changed);
        for key in changed.clone().take(crate::applied::LOGGED) {
            tracing::info!(route = %key, split = %kernel.compiled.routes[key].summary, "route in force");
        }
        for key in report.routes_removed.iter().take(crate::applied::LOGGED) {
            tracing::info!(route = %key, "route removed");
        }
        let (changed, removed) = (changed.count(), report.routes_removed.len());
        let logged = crate::applied::LOGGED;
        if changed > logged || removed > logged {
            tracing::info!(
                "and {} more routes in force, {} more removed",
                changed.saturating_sub(logged),
                removed.saturating_sub(logged)
            );
        }
        self.kernel.adopt(kernel);
        for gateway in not_served.iter().filter(|g| !self.not_served.contains(g)) {
            tracing::info!("{gateway}: its ports are not bound, its routes not loaded");
        }
        for gateway in self.not_served.iter().filter(|g| !not_served.contains(g)) {
            tracing::info!(gateway = %gateway.gateway, "gateway served here again, or gone from the rules");
        }
        self.not_served = not_served;
        self.model = std::sync::Arc::new(model);
        self.sources
            .applied
            .transitions_mut()
            .observe(&self.model.gateway_api_status, crate::cli::now_ms());
        self.drain.track_removed(&self.model, &self.kernel.stat_ids);
        self.publish();
        self.publish_node_status();
        self.health.follow(&self.model);
        Ok(())
    }

    /// Whether `model` can be put in force on this node (everything
    /// [`Self::install`] checks before it writes to the kernel but binding
    /// sockets), for `apply --dry-run` and the admin socket's checks.
    pub(super) fn check(&self, model: &RoutingModel) -> Result<(), InstallError> {
        let (model, _) = model.clone().for_node(self.node_labels.as_ref());
        let usable = self.health.usable(&model);
        self.kernel.compile(&usable, &self.l7.addrs)?;
        Ok(())
    }

    /// Endpoint health changed: the rules in force compiled again without
    /// the endpoints health took out, and what differs written; the proxy
    /// follows once the kernel did.
    pub(super) fn reapply(&mut self) {
        self.observer.status.moved = true;
        self.observer.endpoints_stale = true;
        self.observer.status.all_routes_stale();
        let usable = self.health.usable(&self.model);
        let result = self
            .kernel
            .compile(&usable, &self.l7.addrs)
            .and_then(|compiled| Ok((compiled, self.l7.prepare_update(&usable)?)))
            .and_then(|(compiled, proxy)| {
                let report = self.kernel.apply(&compiled)?;
                Ok((compiled, report, proxy))
            });
        match result {
            Ok((compiled, report, proxy)) => {
                self.kernel.stat_ids = compiled.stat_ids;
                self.l7.install(proxy, &usable);
                let logged = crate::applied::LOGGED;
                for key in report.routes_changed.iter().take(logged) {
                    tracing::info!(route = %key, split = %compiled.routes[key].summary, "route tables follow endpoint health");
                }
                if report.routes_changed.len() > logged {
                    tracing::info!(
                        "and {} more routes follow endpoint health",
                        report.routes_changed.len() - logged
                    );
                }
            }
            Err(err) => tracing::warn!(%err, "cannot update the tables for the endpoints' health"),
        }
    }
}
