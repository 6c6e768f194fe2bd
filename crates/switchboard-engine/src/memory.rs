//! A [`Store`] in memory: for deterministic engine tests and for benchmarks that measure everything
//! but the disk. It keeps the same promises as a durable store (one atomic commit of call and
//! notifications, versions, outbox order) and passes the same conformance suite; it just forgets
//! everything when dropped.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use switchboard_core::call::Call;

use crate::store::{NewNotification, OutboxRow, OutboxStatus, Store, StoreError, StoredCall};

#[derive(Default)]
pub struct MemoryStore {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    calls: HashMap<String, StoredCall>,
    outbox: BTreeMap<i64, OutboxRow>,
    next_seq: i64,
}

impl MemoryStore {
    pub fn new() -> Self {
        Self::default()
    }

    fn inner(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[async_trait::async_trait]
impl Store for MemoryStore {
    async fn commit(
        &self,
        call: &Call,
        expected_version: Option<u64>,
        notifications: &[NewNotification],
        now: u64,
    ) -> Result<(u64, Vec<OutboxRow>), StoreError> {
        let mut s = self.inner();
        let version = match expected_version {
            None if s.calls.contains_key(&call.id) => return Err(StoreError::Exists { id: call.id.clone() }),
            None => 1,
            Some(expected) => match s.calls.get(&call.id) {
                Some(stored) if stored.version == expected => expected + 1,
                _ => return Err(StoreError::Conflict { id: call.id.clone(), expected }),
            },
        };
        if call.is_terminated() {
            s.calls.remove(&call.id);
        } else {
            s.calls.insert(call.id.clone(), StoredCall { call: call.clone(), version });
        }
        let mut rows = Vec::with_capacity(notifications.len());
        for n in notifications {
            s.next_seq += 1;
            let row = OutboxRow::owed(s.next_seq, call, n, now);
            s.outbox.insert(row.seq, row.clone());
            rows.push(row);
        }
        Ok((version, rows))
    }

    async fn live_calls(&self) -> Result<Vec<StoredCall>, StoreError> {
        Ok(self.inner().calls.values().cloned().collect())
    }

    async fn outbox(&self, status: OutboxStatus) -> Result<Vec<OutboxRow>, StoreError> {
        Ok(self.inner().outbox.values().filter(|r| r.status == status).cloned().collect())
    }

    async fn delivered(&self, seqs: &[i64]) -> Result<(), StoreError> {
        let mut s = self.inner();
        for seq in seqs {
            s.outbox.remove(seq);
        }
        Ok(())
    }

    async fn attempt_failed(&self, seqs: &[i64], next_attempt_at: Option<u64>, error: &str) -> Result<(), StoreError> {
        let mut s = self.inner();
        for seq in seqs {
            if let Some(r) = s.outbox.get_mut(seq) {
                r.attempts += 1;
                r.last_error = Some(error.to_owned());
                match next_attempt_at {
                    Some(at) => r.next_attempt_at = at,
                    None => {
                        r.next_attempt_at = 0;
                        r.status = OutboxStatus::Failed;
                    }
                }
            }
        }
        Ok(())
    }

    async fn requeue_failed(&self, now: u64) -> Result<usize, StoreError> {
        let mut s = self.inner();
        let mut n = 0;
        for r in s.outbox.values_mut().filter(|r| r.status == OutboxStatus::Failed) {
            r.status = OutboxStatus::Pending;
            r.attempts = 0;
            r.next_attempt_at = now;
            n += 1;
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    #[tokio::test]
    async fn passes_the_store_conformance_suite() {
        crate::conformance::run(crate::conformance::Memory).await;
    }
}
