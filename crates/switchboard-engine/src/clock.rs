//! The one clock that the engine, the notifier, the network and the token code read, and the one timer
//! queue that runs on it.
//!
//! - **System time** ([`Clock::system`]): `now` is the wall clock; a single task sleeps until the
//!   earliest timer and spawns what falls due.
//! - **Virtual time** ([`Clock::virtual_at`]): `now` stands still until [`Clock::advance`] moves it.
//!   Advancing fires every timer that falls due, in deadline order, each with `now` set to its
//!   deadline, and waits for the work each one causes to settle before the next. Tests of the ring
//!   timeout (60 s) or keepAlive expiry (45 min) run in milliseconds of real time, without sleeping.
//!
//! Timers are cancelled by id, so an ended call leaves nothing sleeping behind.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use switchboard_core::Millis;
use tokio::sync::Notify;

/// The work a timer does when it fires.
pub type Job = Box<dyn FnOnce() -> JobFuture + Send>;
pub type JobFuture = Pin<Box<dyn Future<Output = ()> + Send>>;

/// A scheduled timer, for [`Clock::cancel`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct TimerId(u64);

/// The clock is not virtual, so it cannot be moved by hand.
#[derive(Debug, thiserror::Error)]
#[error("the clock is the system clock; start the server with --virtual-clock to move time by hand")]
pub struct NotVirtual;

#[derive(Clone)]
pub struct Clock {
    inner: Arc<Inner>,
}

struct Inner {
    /// `None`: the system clock. `Some`: virtual milliseconds since the Unix epoch.
    virtual_now: Option<AtomicU64>,
    queue: Mutex<Queue>,
    /// Wakes the system clock's runner when an earlier timer arrives.
    wake: Notify,
    /// One advance at a time, so that timers fire in order.
    advancing: tokio::sync::Mutex<()>,
}

#[derive(Default)]
struct Queue {
    next_id: u64,
    /// (deadline, id) → job: deadline order, and scheduling order among equal deadlines.
    due: BTreeMap<(Millis, u64), Job>,
    /// id → deadline, to cancel by id.
    deadlines: HashMap<u64, Millis>,
}

impl Queue {
    fn pop_due(&mut self, until: Millis) -> Option<(Millis, Job)> {
        let (&(at, id), _) = self.due.first_key_value()?;
        if at > until {
            return None;
        }
        self.deadlines.remove(&id);
        self.due.remove(&(at, id)).map(|job| (at, job))
    }
}

fn system_now() -> Millis {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as Millis).unwrap_or(0)
}

impl Clock {
    /// The wall clock. Spawns the timer queue's runner, so it must be called inside a tokio runtime.
    pub fn system() -> Clock {
        let clock = Clock::new(None);
        tokio::spawn(run(Arc::clone(&clock.inner)));
        clock
    }

    /// Virtual time, standing still at `start` (milliseconds since the Unix epoch) until advanced.
    pub fn virtual_at(start: Millis) -> Clock {
        Clock::new(Some(AtomicU64::new(start)))
    }

    /// Virtual time, standing still at the current wall-clock time.
    pub fn virtual_now() -> Clock {
        Clock::virtual_at(system_now())
    }

    fn new(virtual_now: Option<AtomicU64>) -> Clock {
        Clock {
            inner: Arc::new(Inner {
                virtual_now,
                queue: Mutex::new(Queue::default()),
                wake: Notify::new(),
                advancing: tokio::sync::Mutex::new(()),
            }),
        }
    }

    pub fn is_virtual(&self) -> bool {
        self.inner.virtual_now.is_some()
    }

    /// Milliseconds since the Unix epoch.
    pub fn now_ms(&self) -> Millis {
        match &self.inner.virtual_now {
            Some(now) => now.load(Ordering::SeqCst),
            None => system_now(),
        }
    }

    fn queue(&self) -> std::sync::MutexGuard<'_, Queue> {
        self.inner.queue.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Runs `job` once `now` reaches `at`. A deadline already passed fires at once (on the system
    /// clock) or at the next advance (on a virtual one).
    pub fn schedule(&self, at: Millis, job: Job) -> TimerId {
        let mut q = self.queue();
        q.next_id += 1;
        let id = q.next_id;
        q.due.insert((at, id), job);
        q.deadlines.insert(id, at);
        drop(q);
        self.inner.wake.notify_one();
        TimerId(id)
    }

    /// Runs `job` `after` milliseconds from now.
    pub fn schedule_in(&self, after: Millis, job: Job) -> TimerId {
        self.schedule(self.now_ms().saturating_add(after), job)
    }

    /// Forgets a timer that has not fired yet; a fired or unknown one is ignored.
    pub fn cancel(&self, id: TimerId) {
        let mut q = self.queue();
        if let Some(at) = q.deadlines.remove(&id.0) {
            q.due.remove(&(at, id.0));
        }
    }

    /// How many timers are waiting.
    pub fn pending(&self) -> usize {
        self.queue().due.len()
    }

    /// Completes once `now` has reached `at`. Dropping the future cancels its timer.
    pub async fn sleep_until(&self, at: Millis) {
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let job: Job = Box::new(move || {
            let _ = tx.send(());
            Box::pin(async {})
        });
        let id = {
            let mut q = self.queue();
            // Virtual time already past `at` (an advance ran while the caller was getting here):
            // no advance would fire it now. Checked under the queue's lock, which `advance` holds
            // when it moves `now` to its target, so that no deadline falls between the two.
            if let Some(now) = &self.inner.virtual_now
                && at <= now.load(Ordering::SeqCst)
            {
                return;
            }
            q.next_id += 1;
            let id = q.next_id;
            q.due.insert((at, id), job);
            q.deadlines.insert(id, at);
            id
        };
        self.inner.wake.notify_one();
        let id = TimerId(id);
        struct CancelOnDrop<'a>(&'a Clock, TimerId);
        impl Drop for CancelOnDrop<'_> {
            fn drop(&mut self) {
                self.0.cancel(self.1);
            }
        }
        let _guard = CancelOnDrop(self, id);
        let _ = rx.await;
    }

    /// Virtual time only: moves `now` forward by `by` milliseconds. Every timer due by then fires in
    /// deadline order, `now` set to its deadline; after each, `settle` is awaited so that the work it
    /// caused (network events, say) is done before the next fires. Returns the new `now`.
    pub async fn advance<F, Fut>(&self, by: Millis, settle: F) -> Result<Millis, NotVirtual>
    where
        F: Fn() -> Fut,
        Fut: Future<Output = ()>,
    {
        let Some(now) = &self.inner.virtual_now else { return Err(NotVirtual) };
        let _one_at_a_time = self.inner.advancing.lock().await;
        settle().await;
        let target = now.load(Ordering::SeqCst).saturating_add(by);
        loop {
            let next = {
                let mut q = self.queue();
                let next = q.pop_due(target);
                if next.is_none() {
                    // Under the lock: a sleeper that comes after sees the new `now` ([`Clock::sleep_until`]).
                    now.fetch_max(target, Ordering::SeqCst);
                }
                next
            };
            let Some((at, job)) = next else { break };
            now.fetch_max(at, Ordering::SeqCst);
            // On its own task: a timer taken off the queue runs to the end even if the caller of
            // `advance` goes away.
            let _ = tokio::spawn(job()).await;
            settle().await;
        }
        now.fetch_max(target, Ordering::SeqCst);
        Ok(now.load(Ordering::SeqCst))
    }
}

/// The system clock's runner: sleeps until the earliest deadline, then spawns every job due.
async fn run(inner: Arc<Inner>) {
    loop {
        let now = system_now();
        let mut due = Vec::new();
        let next = {
            let mut q = inner.queue.lock().unwrap_or_else(|e| e.into_inner());
            while let Some((_, job)) = q.pop_due(now) {
                due.push(job);
            }
            q.due.first_key_value().map(|(&(at, _), _)| at)
        };
        for job in due {
            tokio::spawn(job());
        }
        match next {
            Some(at) => {
                let wait = Duration::from_millis(at.saturating_sub(now).max(1));
                tokio::select! {
                    _ = inner.wake.notified() => {}
                    _ = tokio::time::sleep(wait) => {}
                }
            }
            None => inner.wake.notified().await,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;

    #[tokio::test]
    async fn a_sleeper_whose_deadline_an_advance_passed_wakes_at_once() {
        let clock = Clock::virtual_now();
        let start = clock.now_ms();
        clock.advance(1_000, || async {}).await.unwrap_or_default();
        // Its deadline passed before it slept: no later advance is needed to wake it.
        tokio::time::timeout(std::time::Duration::from_secs(1), clock.sleep_until(start + 500)).await.expect("woke at once");
        assert_eq!(clock.pending(), 0);
    }

    fn record(log: &Arc<Mutex<Vec<(String, Millis)>>>, clock: &Clock, name: &str) -> Job {
        let (log, clock, name) = (Arc::clone(log), clock.clone(), name.to_owned());
        Box::new(move || {
            Box::pin(async move {
                log.lock().unwrap_or_else(|e| e.into_inner()).push((name, clock.now_ms()));
            })
        })
    }

    #[tokio::test]
    async fn virtual_time_fires_due_timers_in_deadline_order_at_their_deadlines() {
        let clock = Clock::virtual_at(1_000);
        let log = Arc::new(Mutex::new(Vec::new()));
        clock.schedule(1_300, record(&log, &clock, "c"));
        clock.schedule(1_100, record(&log, &clock, "a"));
        let cancelled = clock.schedule(1_150, record(&log, &clock, "never"));
        clock.schedule(1_200, record(&log, &clock, "b"));
        clock.schedule(5_000, record(&log, &clock, "later"));
        clock.cancel(cancelled);
        assert_eq!(clock.now_ms(), 1_000, "virtual time stands still");
        let now = clock.advance(500, || async {}).await.expect("virtual");
        assert_eq!(now, 1_500);
        let fired = log.lock().unwrap_or_else(|e| e.into_inner()).clone();
        assert_eq!(fired, vec![("a".to_owned(), 1_100), ("b".to_owned(), 1_200), ("c".to_owned(), 1_300)]);
        assert_eq!(clock.pending(), 1, "the timer beyond the target waits");
    }

    #[tokio::test]
    async fn a_timer_scheduled_while_advancing_fires_in_the_same_advance_if_due() {
        let clock = Clock::virtual_at(0);
        let log = Arc::new(Mutex::new(Vec::new()));
        let (c, l) = (clock.clone(), Arc::clone(&log));
        clock.schedule(
            10,
            Box::new(move || {
                let job = record(&l, &c, "chained");
                c.schedule_in(5, job);
                Box::pin(async {})
            }),
        );
        clock.advance(100, || async {}).await.expect("virtual");
        assert_eq!(log.lock().unwrap_or_else(|e| e.into_inner()).clone(), vec![("chained".to_owned(), 15)]);
    }

    #[tokio::test]
    async fn the_system_clock_cannot_be_advanced_and_fires_timers_by_itself() {
        let clock = Clock::system();
        assert!(clock.advance(1, || async {}).await.is_err());
        let log = Arc::new(Mutex::new(Vec::new()));
        clock.schedule_in(5, record(&log, &clock, "x"));
        clock.sleep_until(clock.now_ms() + 30).await;
        assert_eq!(log.lock().unwrap_or_else(|e| e.into_inner()).len(), 1);
        assert_eq!(clock.pending(), 0);
    }
}
