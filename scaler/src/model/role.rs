//! Roles: what an input means, independent of any server's naming.

/// What an input means, independent of any server's naming.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Role {
    /// Counter of finished requests.
    Requests,
    /// Counter of failed requests (a subset of `Requests`).
    Errors,
    /// Histogram of request latency.
    Latency,
    /// Gauge of requests in flight.
    InFlight,
    /// Gauge of requests waiting for capacity.
    Queue,
    /// Gauge of requests being executed.
    Running,
    /// Gauge of KV-cache use, 0..1.
    KvCache,
    /// Counter of prompt (input) tokens.
    PromptTokens,
    /// Counter of generated (output) tokens.
    GenerationTokens,
    /// Histogram of time to first token.
    TimeToFirstToken,
    /// Histogram of the time between generated tokens (decode speed).
    InterTokenLatency,
    /// Histogram of the time requests waited before being scheduled.
    QueueTime,
    /// Counter of requests preempted (evicted from the running batch).
    Preemptions,
    /// Counter of the total time spent by finished requests (Triton's `_us` counters).
    LatencyTotal,
    /// Counter of the total time finished requests spent queued.
    QueueTimeTotal,
    /// Gauge of the upstream members a data plane knows for the matched object. It exists before
    /// any traffic, so it tells a route that has not been used yet from a matcher naming nothing.
    Members,
    /// Gauge of how saturated a pool is, 0..1 (the endpoint picker's flow control).
    Saturation,
}

impl Role {
    pub const ALL: [Role; 17] = [
        Role::Requests,
        Role::Errors,
        Role::Latency,
        Role::InFlight,
        Role::Queue,
        Role::Running,
        Role::KvCache,
        Role::PromptTokens,
        Role::GenerationTokens,
        Role::TimeToFirstToken,
        Role::InterTokenLatency,
        Role::QueueTime,
        Role::Preemptions,
        Role::LatencyTotal,
        Role::QueueTimeTotal,
        Role::Members,
        Role::Saturation,
    ];

    /// Name used in configuration files (`custom:` mappings).
    pub fn name(self) -> &'static str {
        match self {
            Role::Requests => "requests",
            Role::Errors => "errors",
            Role::Latency => "latency",
            Role::InFlight => "in_flight",
            Role::Queue => "queue",
            Role::Running => "running",
            Role::KvCache => "kv_cache",
            Role::PromptTokens => "prompt_tokens",
            Role::GenerationTokens => "generation_tokens",
            Role::TimeToFirstToken => "time_to_first_token",
            Role::InterTokenLatency => "inter_token_latency",
            Role::QueueTime => "queue_time",
            Role::Preemptions => "preemptions",
            Role::LatencyTotal => "latency_total",
            Role::QueueTimeTotal => "queue_time_total",
            Role::Members => "members",
            Role::Saturation => "saturation",
        }
    }

    pub fn parse(s: &str) -> Option<Role> {
        Role::ALL.into_iter().find(|r| r.name() == s)
    }

    /// The kind of series a role must be read from.
    pub fn kind(self) -> Kind {
        match self {
            Role::Requests
            | Role::Errors
            | Role::PromptTokens
            | Role::GenerationTokens
            | Role::Preemptions
            | Role::LatencyTotal
            | Role::QueueTimeTotal => Kind::Counter,
            Role::Latency | Role::TimeToFirstToken | Role::InterTokenLatency | Role::QueueTime => {
                Kind::Histogram
            }
            Role::InFlight
            | Role::Queue
            | Role::Running
            | Role::KvCache
            | Role::Members
            | Role::Saturation => Kind::Gauge,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    Counter,
    Gauge,
    Histogram,
}

impl Kind {
    pub fn parse(s: &str) -> Option<Kind> {
        match s {
            "counter" => Some(Kind::Counter),
            "gauge" => Some(Kind::Gauge),
            "histogram" => Some(Kind::Histogram),
            _ => None,
        }
    }
}
