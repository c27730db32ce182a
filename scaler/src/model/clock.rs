//! Time as every stage sees it: seconds, passed in, so the math is tested without waiting.

/// Monotonic seconds since redbridge started. Built on tokio's clock so tests can pause time.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    origin: tokio::time::Instant,
}

impl Default for Clock {
    fn default() -> Self {
        Clock {
            origin: tokio::time::Instant::now(),
        }
    }
}

impl Clock {
    pub fn now(&self) -> f64 {
        self.origin.elapsed().as_secs_f64()
    }
}
