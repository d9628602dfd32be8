use std::sync::{Arc, Mutex};

use super::*;

/// A sink that keeps what it was given.
#[derive(Clone, Default)]
struct Kept(Arc<Mutex<Vec<NodeStatus>>>);

impl StatusSink for Kept {
    async fn report(&mut self, status: &NodeStatus) -> Result<(), StoreError> {
        self.0.lock().unwrap().push(status.clone());
        Ok(())
    }
}

#[test]
fn an_unchanged_status_is_not_rewritten_every_second_but_a_change_is_written_at_once() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let kept = Kept::default();
        let (status, rx) = watch::channel(NodeStatus {
            node: "n".into(),
            ..NodeStatus::default()
        });
        let reporter = tokio::spawn(report(kept.clone(), rx, Arc::default()));
        tokio::time::sleep(Duration::from_millis(2500)).await;
        let revisions =
            || -> Vec<i64> { kept.0.lock().unwrap().iter().map(|s| s.revision).collect() };
        assert_eq!(
            revisions(),
            [0],
            "written once, not again within {REWRITE_AFTER:?}"
        );
        status.send_modify(|s| s.revision = 7);
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(revisions(), [0, 7], "a change is written at once");
        assert!(kept.0.lock().unwrap().iter().all(|s| s.updated_ms > 0));
        reporter.abort();
    });
}
