//! One writer: leader election on a `coordination.k8s.io/v1` Lease.
//!
//! Every controller replica discovers, scrapes and answers KEDA; only the holder of the Lease
//! writes (ScaledObjects, routing objects, status, Events): the controller asks
//! [`Leadership::is_leading`] right before each write.
//!
//! Written on kube's own `Api<Lease>` (get, create, replace with the resourceVersion as a
//! precondition, as client-go's leaderelection does) rather than a crate: `kube-leader-election`
//! follows kube 4 (this crate is on kube 5) and, by its own account, has no fencing;
//! `kube-lease-manager` judges expiry by comparing the holder's `renewTime` with the local wall
//! clock (so clock skew between nodes moves the handover) and writes by patches. Here nothing
//! compares wall clocks: each replica measures on its own monotonic clock, and the decisions are
//! pure functions of what it saw and when ([`decide`], [`Seen::update`]), unit tested.
//!
//! With a lease of `D` (15 s by default), from the send of the last successful renewal `s`:
//! - the holder renews every `D/3` (5 s), retries every `D/15` (1 s) after a failure, and writes
//!   only until `s + 2D/3` (10 s): it stops on its own when it cannot renew;
//! - another replica polls every `D/15` and takes over once the record (its resourceVersion) has
//!   not changed for `4D/5` (12 s) as it saw it. It saw the last renewal at `o >= s`, so it takes
//!   over no earlier than `s + 4D/5`: `2D/15` (2 s) after the holder stopped, room for a write in
//!   flight. And no later than `D/15` after the renewal's commit plus `4D/5` plus one poll:
//!   failover within `14D/15`, under the lease duration.
//! - a replica that stops (SIGTERM) gives the Lease up, and another takes it at its next poll.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::api::PostParams;
use kube::{Api, Client};
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::MANAGED_BY;

/// The field manager of the Lease's writes.
const FIELD_MANAGER: &str = "redbridge";

/// Leader election settings (flags of `redbridge controller`).
#[derive(Debug, Clone)]
pub struct Settings {
    /// The Lease's name.
    pub name: String,
    /// The Lease's namespace; `None`: the client's (in a Pod, its own namespace).
    pub namespace: Option<String>,
    /// This replica's name in the Lease (`holderIdentity`): the Pod's name.
    pub identity: String,
    /// How long a Lease holds without renewal (`leaseDurationSeconds`).
    pub duration: Duration,
}

impl Default for Settings {
    fn default() -> Settings {
        Settings {
            name: "redbridge-controller".into(),
            namespace: None,
            identity: identity(None),
            duration: Duration::from_secs(15),
        }
    }
}

/// The Pod's name when given (non-empty), else the host's name and a random suffix: two
/// processes must never share an identity, or both would take themselves for the holder.
pub fn identity(pod_name: Option<String>) -> String {
    if let Some(name) = pod_name.filter(|n| !n.trim().is_empty()) {
        return name;
    }
    let host = std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/proc/sys/kernel/hostname").ok())
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "redbridge".into());
    format!("{host}_{:016x}", rand::random::<u64>())
}

/// The periods of an election, all derived from the lease duration (see the module's notes).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Timing {
    pub duration: Duration,
}

impl Timing {
    /// The holder renews this often.
    pub fn renew_every(&self) -> Duration {
        self.duration / 3
    }

    /// Candidates poll, and a holder retries a failed renewal, this often.
    pub fn retry_every(&self) -> Duration {
        self.duration / 15
    }

    /// The holder writes for this long after sending a renewal that succeeded.
    pub fn leads_for(&self) -> Duration {
        self.duration * 2 / 3
    }

    /// A record of a lease of `duration` unchanged for this long (as seen here) has expired.
    pub fn expires_after(duration: Duration) -> Duration {
        duration * 4 / 5
    }

    /// `leaseDurationSeconds`: whole seconds, rounded up (a longer promise is the safe side).
    fn seconds(&self) -> i32 {
        let s = self.duration.as_secs() + u64::from(self.duration.subsec_nanos() > 0);
        i32::try_from(s.max(1)).unwrap_or(i32::MAX)
    }
}

/// What matters of the Lease as read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// `None` or empty: given up, free to take.
    pub holder: Option<String>,
    /// The holder's promise; `None`: ours is assumed.
    pub duration: Option<Duration>,
    /// Changes with every write: a holder that renews changes it.
    pub version: Option<String>,
}

impl Record {
    pub fn of(lease: &Lease) -> Record {
        let spec = lease.spec.as_ref();
        Record {
            holder: spec
                .and_then(|s| s.holder_identity.clone())
                .filter(|h| !h.is_empty()),
            duration: spec
                .and_then(|s| s.lease_duration_seconds)
                .and_then(|s| u64::try_from(s).ok())
                .filter(|s| *s > 0)
                .map(Duration::from_secs),
            version: lease.metadata.resource_version.clone(),
        }
    }
}

/// A record and when this replica first saw it as it is.
#[derive(Debug, Clone, PartialEq)]
pub struct Seen {
    pub record: Record,
    pub since: Instant,
}

impl Seen {
    /// `record` read at `now`: the same as before keeps its first sighting, any change restarts it.
    pub fn update(previous: Option<Seen>, record: Record, now: Instant) -> Seen {
        match previous {
            Some(p) if p.record == record => p,
            _ => Seen { record, since: now },
        }
    }
}

/// What to do after reading the Lease.
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    /// There is no Lease: create it, holding it.
    Create,
    /// Free (given up) or expired: take it over (an update over the version read).
    Acquire,
    /// Ours: renew it.
    Renew,
    /// Another replica holds it; at `expires` it may be taken over if it has not changed.
    Follow { holder: String, expires: Instant },
}

/// The election's step for replica `me`, from what it saw of the Lease (`None`: none exists).
pub fn decide(me: &str, seen: Option<&Seen>, now: Instant, timing: &Timing) -> Decision {
    let Some(seen) = seen else {
        return Decision::Create;
    };
    let Some(holder) = &seen.record.holder else {
        return Decision::Acquire;
    };
    if holder == me {
        return Decision::Renew;
    }
    let duration = seen.record.duration.unwrap_or(timing.duration);
    let expires = seen.since + Timing::expires_after(duration);
    if now >= expires {
        Decision::Acquire
    } else {
        Decision::Follow {
            holder: holder.clone(),
            expires,
        }
    }
}

/// Until when a holder whose renewal sent at `sent` succeeded may write.
pub fn leads_until(sent: Instant, timing: &Timing) -> Instant {
    sent + timing.leads_for()
}

/// Whether this replica may write now. Cheap to clone and to ask.
#[derive(Debug, Clone)]
pub struct Leadership {
    until: Arc<Mutex<Option<Instant>>>,
    leading: watch::Sender<bool>,
}

impl Default for Leadership {
    fn default() -> Leadership {
        Leadership {
            until: Arc::default(),
            leading: watch::Sender::new(false),
        }
    }
}

impl Leadership {
    /// True while this replica holds the Lease and its last renewal is recent enough: it turns
    /// false at the deadline by itself, whatever the election loop is doing.
    pub fn is_leading(&self) -> bool {
        self.until().is_some_and(|t| Instant::now() < t)
    }

    /// Changes of leadership (true: this replica took the Lease; false: it lost or gave it up).
    pub fn subscribe(&self) -> watch::Receiver<bool> {
        self.leading.subscribe()
    }

    fn until(&self) -> Option<Instant> {
        *self.until.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn lead_until(&self, t: Instant) {
        *self.until.lock().unwrap_or_else(|e| e.into_inner()) = Some(t);
        self.leading
            .send_if_modified(|l| !std::mem::replace(l, true));
    }

    fn step_down(&self) {
        *self.until.lock().unwrap_or_else(|e| e.into_inner()) = None;
        self.leading
            .send_if_modified(|l| std::mem::replace(l, false));
    }
}

/// Takes part in the election on one Lease.
pub struct Elector {
    api: Api<Lease>,
    settings: Settings,
    timing: Timing,
    leadership: Leadership,
}

impl Elector {
    pub fn new(client: Client, settings: Settings) -> Elector {
        let api = match &settings.namespace {
            Some(ns) => Api::namespaced(client, ns),
            None => Api::default_namespaced(client),
        };
        Elector {
            api,
            timing: Timing {
                duration: settings.duration,
            },
            settings,
            leadership: Leadership::default(),
        }
    }

    pub fn leadership(&self) -> Leadership {
        self.leadership.clone()
    }

    /// Reads the Lease and acts on it until `shutdown` (it does not give the Lease up: see
    /// [`Elector::release`]). Steps down at its deadline when a renewal does not succeed.
    pub async fn run(&self, shutdown: CancellationToken) {
        info!(
            lease = %self.settings.name,
            identity = %self.settings.identity,
            duration = ?self.timing.duration,
            "Taking part in the leader election"
        );
        let attempts = async {
            let mut seen: Option<Seen> = None;
            loop {
                let renewed = self.attempt(&mut seen).await;
                let wait = if renewed {
                    self.timing.renew_every()
                } else {
                    self.timing.retry_every()
                };
                tokio::time::sleep(wait).await;
            }
        };
        // The deadline, kept even while a request hangs.
        let deadline = async {
            let mut changes = self.leadership.subscribe();
            loop {
                match self.leadership.until() {
                    Some(t) => {
                        tokio::time::sleep_until(t).await;
                        if self.leadership.until().is_some_and(|t| t <= Instant::now()) {
                            warn!(lease = %self.settings.name, "Lease not renewed in time; no longer writing");
                            self.leadership.step_down();
                        }
                    }
                    None => {
                        let _ = changes.changed().await;
                    }
                }
            }
        };
        tokio::select! {
            _ = shutdown.cancelled() => {}
            _ = attempts => {}
            _ = deadline => {}
        }
    }

    /// One round: read, decide, write. True when this replica holds the Lease afresh.
    async fn attempt(&self, seen: &mut Option<Seen>) -> bool {
        let name = &self.settings.name;
        let me = self.settings.identity.as_str();
        let read = tokio::time::timeout(self.timing.renew_every(), self.api.get_opt(name)).await;
        let lease = match read {
            Ok(Ok(lease)) => lease,
            Ok(Err(e)) => {
                warn!(lease = %name, error = %e, "Cannot read the Lease (RBAC: get leases?); retrying");
                return false;
            }
            Err(_) => {
                warn!(lease = %name, "Reading the Lease timed out; retrying");
                return false;
            }
        };
        let now = Instant::now();
        *seen = lease
            .as_ref()
            .map(|l| Seen::update(seen.take(), Record::of(l), now));
        let decision = decide(me, seen.as_ref(), now, &self.timing);
        let wall = MicroTime(Timestamp::now());
        let (lease, create) = match (decision, lease) {
            (Decision::Follow { holder, .. }, _) => {
                if self.leadership.is_leading() {
                    warn!(lease = %name, %holder, "Another replica holds the Lease; no longer writing");
                }
                self.leadership.step_down();
                debug!(lease = %name, %holder, "Following");
                return false;
            }
            (Decision::Create, _) | (_, None) => {
                let lease = Lease {
                    metadata: ObjectMeta {
                        name: Some(name.clone()),
                        labels: Some([(MANAGED_BY.0.into(), MANAGED_BY.1.into())].into()),
                        ..Default::default()
                    },
                    spec: Some(LeaseSpec {
                        holder_identity: Some(me.into()),
                        lease_duration_seconds: Some(self.timing.seconds()),
                        acquire_time: Some(wall.clone()),
                        renew_time: Some(wall),
                        lease_transitions: Some(0),
                        ..Default::default()
                    }),
                };
                (lease, true)
            }
            (decision, Some(mut lease)) => {
                let spec = lease.spec.get_or_insert_with(Default::default);
                if decision == Decision::Acquire {
                    spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
                    spec.acquire_time = Some(wall.clone());
                    spec.holder_identity = Some(me.into());
                }
                spec.lease_duration_seconds = Some(self.timing.seconds());
                spec.renew_time = Some(wall);
                (lease, false)
            }
        };
        let params = PostParams {
            field_manager: Some(FIELD_MANAGER.into()),
            ..Default::default()
        };
        let sent = Instant::now();
        let write = async {
            if create {
                self.api.create(&params, &lease).await
            } else {
                // The resourceVersion read is the precondition: a write by anyone since is a 409.
                self.api.replace(name, &params, &lease).await
            }
        };
        match tokio::time::timeout(self.timing.renew_every(), write).await {
            Ok(Ok(written)) => {
                if !self.leadership.is_leading() {
                    info!(lease = %name, identity = %me, "Holding the Lease; this replica writes");
                }
                self.leadership.lead_until(leads_until(sent, &self.timing));
                *seen = Some(Seen::update(
                    seen.take(),
                    Record::of(&written),
                    Instant::now(),
                ));
                true
            }
            Ok(Err(kube::Error::Api(s))) if s.code == 409 => {
                debug!(lease = %name, "The Lease changed meanwhile; reading it again");
                false
            }
            Ok(Err(e)) => {
                warn!(lease = %name, error = %e, "Cannot write the Lease (RBAC: create, update leases?); retrying");
                false
            }
            Err(_) => {
                warn!(lease = %name, "Writing the Lease timed out; retrying");
                false
            }
        }
    }

    /// Gives the Lease up, if held, so that another replica takes it at its next poll instead of
    /// waiting for it to expire. Writing has stopped before.
    pub async fn release(&self) {
        if !self.leadership.is_leading() {
            self.leadership.step_down();
            return;
        }
        self.leadership.step_down();
        let name = &self.settings.name;
        let give_up = async {
            let Some(mut lease) = self.api.get_opt(name).await? else {
                return Ok(());
            };
            let spec = lease.spec.get_or_insert_with(Default::default);
            if spec.holder_identity.as_deref() != Some(self.settings.identity.as_str()) {
                return Ok(());
            }
            spec.holder_identity = None;
            spec.renew_time = Some(MicroTime(Timestamp::now()));
            let params = PostParams {
                field_manager: Some(FIELD_MANAGER.into()),
                ..Default::default()
            };
            self.api.replace(name, &params, &lease).await.map(|_| ())
        };
        match tokio::time::timeout(self.timing.renew_every(), give_up).await {
            Ok(Ok(())) => info!(lease = %name, "Lease given up"),
            Ok(Err(e)) => {
                warn!(lease = %name, error = %e, "Cannot give the Lease up; it expires by itself")
            }
            Err(_) => warn!(lease = %name, "Giving the Lease up timed out; it expires by itself"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: Duration = Duration::from_secs(15);

    fn timing() -> Timing {
        Timing { duration: D }
    }

    fn held(by: &str, version: &str) -> Record {
        Record {
            holder: Some(by.into()),
            duration: Some(D),
            version: Some(version.into()),
        }
    }

    fn secs(s: f64) -> Duration {
        Duration::from_secs_f64(s)
    }

    #[test]
    fn periods_follow_the_lease_duration() {
        let t = timing();
        assert_eq!(t.renew_every(), secs(5.0));
        assert_eq!(t.retry_every(), secs(1.0));
        assert_eq!(t.leads_for(), secs(10.0));
        assert_eq!(Timing::expires_after(D), secs(12.0));
        assert_eq!(t.seconds(), 15);
        assert_eq!(
            Timing {
                duration: secs(2.5)
            }
            .seconds(),
            3,
            "rounded up"
        );
    }

    #[test]
    fn no_lease_is_created_a_free_one_acquired_ours_renewed() {
        let now = Instant::now();
        let t = timing();
        assert_eq!(decide("a", None, now, &t), Decision::Create);
        let free = Seen {
            record: Record {
                holder: None,
                ..held("x", "3")
            },
            since: now,
        };
        assert_eq!(decide("a", Some(&free), now, &t), Decision::Acquire);
        let ours = Seen {
            record: held("a", "4"),
            since: now,
        };
        assert_eq!(decide("a", Some(&ours), now, &t), Decision::Renew);
        // An empty holder is a given-up Lease too.
        let lease = Lease {
            spec: Some(LeaseSpec {
                holder_identity: Some(String::new()),
                ..Default::default()
            }),
            ..Default::default()
        };
        assert_eq!(Record::of(&lease).holder, None);
    }

    #[test]
    fn anothers_lease_expires_only_unchanged_for_four_fifths_of_its_duration() {
        let t0 = Instant::now();
        let t = timing();
        let seen = Seen::update(None, held("b", "7"), t0);
        assert_eq!(
            decide("a", Some(&seen), t0 + secs(11.9), &t),
            Decision::Follow {
                holder: "b".into(),
                expires: t0 + secs(12.0)
            }
        );
        assert_eq!(
            decide("a", Some(&seen), t0 + secs(12.0), &t),
            Decision::Acquire
        );
        // Read again unchanged: still measured from the first sighting.
        let again = Seen::update(Some(seen.clone()), held("b", "7"), t0 + secs(6.0));
        assert_eq!(again.since, t0);
        // Renewed (a new version): the wait starts over.
        let renewed = Seen::update(Some(seen), held("b", "8"), t0 + secs(6.0));
        assert_eq!(renewed.since, t0 + secs(6.0));
        assert!(matches!(
            decide("a", Some(&renewed), t0 + secs(12.0), &t),
            Decision::Follow { .. }
        ));
        assert_eq!(
            decide("a", Some(&renewed), t0 + secs(18.0), &t),
            Decision::Acquire
        );
    }

    #[test]
    fn the_holders_promise_counts_not_ours() {
        let t0 = Instant::now();
        let long = Record {
            duration: Some(secs(60.0)),
            ..held("b", "1")
        };
        let seen = Seen::update(None, long, t0);
        assert!(matches!(
            decide("a", Some(&seen), t0 + secs(30.0), &timing()),
            Decision::Follow { .. }
        ));
        assert_eq!(
            decide("a", Some(&seen), t0 + secs(48.0), &timing()),
            Decision::Acquire
        );
        // Without one, ours.
        let none = Seen::update(
            None,
            Record {
                duration: None,
                ..held("b", "1")
            },
            t0,
        );
        assert_eq!(
            decide("a", Some(&none), t0 + secs(12.0), &timing()),
            Decision::Acquire
        );
    }

    /// The holder stops writing before anyone may take over, and someone takes over within the
    /// lease duration of the last renewal, whatever the moments of the polls.
    #[test]
    fn the_holder_stops_before_a_takeover_and_failover_is_within_the_duration() {
        let t = timing();
        let sent = Instant::now();
        let stops = leads_until(sent, &t);
        // The renewal is committed and first seen by the candidate at some moment after it was
        // sent (within one poll), and the candidate polls every retry period after that.
        for seen_after in [0.0, 0.01, 0.5, 0.99] {
            for phase in [0.0, 0.3, 0.99] {
                let first_sight = sent + secs(seen_after);
                let seen = Seen::update(None, held("b", "9"), first_sight);
                let mut poll = first_sight + secs(phase * t.retry_every().as_secs_f64());
                while decide("a", Some(&seen), poll, &t) != Decision::Acquire {
                    poll += t.retry_every();
                }
                assert!(
                    poll >= stops + secs(2.0),
                    "takeover {:?} after the holder stopped",
                    poll - stops
                );
                assert!(poll - sent <= D, "failover after {:?}", poll - sent);
            }
        }
    }

    #[tokio::test(start_paused = true)]
    async fn leadership_ends_at_its_deadline_by_itself() {
        let l = Leadership::default();
        let mut changes = l.subscribe();
        assert!(!l.is_leading());
        let t = timing();
        l.lead_until(leads_until(Instant::now(), &t));
        assert!(l.is_leading());
        assert!(changes.has_changed().unwrap());
        assert!(*changes.borrow_and_update());
        tokio::time::advance(secs(9.9)).await;
        assert!(l.is_leading());
        tokio::time::advance(secs(0.2)).await;
        assert!(!l.is_leading(), "not renewed: no longer writing");
        // A renewal moves the deadline without announcing a change.
        l.lead_until(leads_until(Instant::now(), &t));
        assert!(!changes.has_changed().unwrap());
        l.step_down();
        assert!(!l.is_leading());
        assert!(!*changes.borrow_and_update());
    }

    #[test]
    fn identity_is_the_pods_name_or_unique() {
        assert_eq!(
            identity(Some("redbridge-7c9d-x2".into())),
            "redbridge-7c9d-x2"
        );
        let (a, b) = (identity(None), identity(Some(" ".into())));
        assert_ne!(a, b, "two processes without a Pod name differ");
        assert!(a.contains('_'));
    }
}
