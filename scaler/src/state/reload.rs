//! Reloading the configuration file without a restart.
//!
//! A ConfigMap mounted as a volume is updated by swapping a symlink (`..data`) in its
//! directory, which no watch on the file itself sees; so the file is read again every
//! `every` (through the path, following the links) and its content compared with what was
//! applied. A change is validated as at start: a valid file is applied pool by pool
//! ([`State::upsert_pool`] keeps the windows of targets that stay, removed pools stop, added
//! ones start); an invalid one is refused, logged and counted, and the previous configuration
//! keeps serving.

use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info};

use super::State;
use crate::model::Config;

/// What the watcher last applied.
pub struct Watch {
    path: PathBuf,
    /// The bytes last read (applied or refused), so an unchanged file is not parsed again.
    last: Vec<u8>,
    /// (namespace, name) of the pools the file defined when last applied: the pools a reload
    /// may remove (the controller's own pools are not the file's to remove).
    pools: Vec<(Option<String>, String)>,
}

fn keys(config: &Config) -> Vec<(Option<String>, String)> {
    config
        .pools
        .iter()
        .map(|p| (p.namespace.clone(), p.name.clone()))
        .collect()
}

impl Watch {
    /// Starts from the file as loaded at start: `content` and the `config` parsed from it.
    pub fn new(path: PathBuf, content: Vec<u8>, config: &Config) -> Watch {
        Watch {
            path,
            last: content,
            pools: keys(config),
        }
    }

    /// Reads the file once and applies it if it changed. `Ok(true)`: a change was applied;
    /// `Ok(false)`: unchanged (or unreadable for now, as between the steps of a swap done by
    /// hand); `Err`: the new content is invalid and was refused.
    pub async fn check(&mut self, state: &State) -> Result<bool, String> {
        let content = match tokio::fs::read(&self.path).await {
            Ok(c) => c,
            Err(e) => {
                debug!(path = %self.path.display(), error = %e, "Cannot read the configuration file; keeping the one served");
                return Ok(false);
            }
        };
        if content == self.last {
            return Ok(false);
        }
        self.last.clone_from(&content);
        let file = self.path.display().to_string();
        let parsed = std::str::from_utf8(&content)
            .map_err(|e| format!("{file}: not UTF-8: {e}"))
            .and_then(|text| Config::from_yaml(text, &file).map_err(|e| e.to_string()));
        let config = match parsed {
            Ok(c) => c,
            Err(e) => {
                state
                    .metrics
                    .config_reload_failures
                    .fetch_add(1, Ordering::Relaxed);
                state
                    .metrics
                    .config_last_reload_ok
                    .store(false, Ordering::Relaxed);
                return Err(e);
            }
        };
        let next = keys(&config);
        for (namespace, name) in &self.pools {
            if !next.contains(&(namespace.clone(), name.clone())) {
                state.remove_pool(namespace.as_deref(), name);
            }
        }
        for pool in &config.pools {
            state.upsert_pool(pool.clone());
        }
        self.pools = next;
        state.metrics.config_reloads.fetch_add(1, Ordering::Relaxed);
        state
            .metrics
            .config_last_reload_ok
            .store(true, Ordering::Relaxed);
        Ok(true)
    }

    /// Checks the file every `every` until `shutdown`.
    pub async fn run(mut self, state: Arc<State>, every: Duration, shutdown: CancellationToken) {
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(every) => {}
            }
            match self.check(&state).await {
                Ok(true) => info!(
                    path = %self.path.display(),
                    pools = self.pools.len(),
                    "Configuration reloaded"
                ),
                Ok(false) => {}
                Err(e) => error!(
                    path = %self.path.display(),
                    error = %e,
                    "Configuration change refused; the previous configuration keeps serving"
                ),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::model::Clock;

    fn pools(targets: &[(&str, &[&str])]) -> String {
        let mut s = String::from("pools:\n");
        for (pool, urls) in targets {
            s.push_str(&format!(
                "  - name: {pool}\n    sources:\n      - name: gw\n        profile: envoy\n        targets:\n"
            ));
            for u in *urls {
                s.push_str(&format!(
                    "          - {{ url: \"http://{u}/stats\", zone: a }}\n"
                ));
            }
        }
        s
    }

    /// What the kubelet does on a ConfigMap update: a new timestamped directory, then the
    /// `..data` symlink renamed over to point at it.
    fn swap(dir: &Path, generation: u32, content: &str) {
        let data = dir.join(format!("..2026_{generation}"));
        std::fs::create_dir(&data).unwrap();
        std::fs::write(data.join("pools.yaml"), content).unwrap();
        let tmp = dir.join("..data_tmp");
        std::os::unix::fs::symlink(data.file_name().unwrap(), &tmp).unwrap();
        std::fs::rename(&tmp, dir.join("..data")).unwrap();
    }

    fn target(state: &State, pool: &str, url: &str) -> Option<Arc<crate::window::TargetState>> {
        state
            .pools()
            .iter()
            .find(|p| p.pool.name == pool)?
            .targets
            .iter()
            .find(|t| t.key.url == format!("http://{url}/stats"))
            .cloned()
    }

    #[tokio::test]
    async fn a_symlink_swap_is_applied_keeping_windows_and_an_invalid_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let first = pools(&[
            ("llama", &["10.0.0.1:1", "10.0.0.2:1"]),
            ("old", &["10.0.0.9:1"]),
        ]);
        swap(dir.path(), 1, &first);
        std::os::unix::fs::symlink("..data/pools.yaml", dir.path().join("pools.yaml")).unwrap();
        let path = dir.path().join("pools.yaml");
        let config = Config::load(&path).unwrap();
        let state = State::new(&config, Clock::default());
        let mut watch = Watch::new(path.clone(), std::fs::read(&path).unwrap(), &config);
        let kept = target(&state, "llama", "10.0.0.1:1").unwrap();
        kept.record_success(1.0, 0.01, 10, Default::default(), 60.0);

        assert_eq!(watch.check(&state).await, Ok(false), "unchanged file");
        swap(
            dir.path(),
            2,
            &pools(&[
                ("llama", &["10.0.0.1:1", "10.0.0.3:1"]),
                ("new", &["10.0.0.7:1"]),
            ]),
        );
        assert_eq!(watch.check(&state).await, Ok(true));
        let after = target(&state, "llama", "10.0.0.1:1").unwrap();
        assert!(
            Arc::ptr_eq(&kept, &after),
            "a target that stays keeps its window"
        );
        assert_eq!(after.lock().samples().len(), 1);
        assert!(
            target(&state, "llama", "10.0.0.2:1").is_none(),
            "removed target stops"
        );
        assert!(
            target(&state, "llama", "10.0.0.3:1").is_some(),
            "added target starts"
        );
        let names: Vec<String> = state.pools().iter().map(|p| p.pool.name.clone()).collect();
        assert_eq!(names, ["llama", "new"]);

        // Invalid: refused, counted, and the served configuration is untouched.
        let generation = state.generation();
        let invalid = pools(&[("llama", &["10.0.0.1:1"])])
            .replace("    sources:", "    window: banana\n    sources:");
        swap(dir.path(), 3, &invalid);
        let err = watch.check(&state).await.unwrap_err();
        assert!(err.contains("window"), "{err}");
        assert_eq!(state.generation(), generation);
        assert!(target(&state, "llama", "10.0.0.3:1").is_some());
        let m = &state.metrics;
        assert_eq!(m.config_reload_failures.load(Ordering::Relaxed), 1);
        assert!(!m.config_last_reload_ok.load(Ordering::Relaxed));
        assert_eq!(
            watch.check(&state).await,
            Ok(false),
            "refused once, not on every poll"
        );

        // Fixed again: applied, and the gauge says so.
        swap(dir.path(), 4, &pools(&[("llama", &["10.0.0.1:1"])]));
        assert_eq!(watch.check(&state).await, Ok(true));
        assert!(m.config_last_reload_ok.load(Ordering::Relaxed));
        assert_eq!(m.config_reloads.load(Ordering::Relaxed), 2);
        assert!(Arc::ptr_eq(
            &kept,
            &target(&state, "llama", "10.0.0.1:1").unwrap()
        ));
    }
}
