//! Server transactions (RFC 3261 §17.2), reduced to what a UAS that answers at once needs: a request
//! retransmitted over UDP gets the same response again, for Timer J (non-INVITE) or Timer H/I (a
//! non-2xx final answer to INVITE, whose ACK is absorbed here). Over TCP nothing is kept (the
//! transport is reliable, Timer J = 0). Sans-IO: time is an argument.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;

/// RFC 3261's T1, the round-trip estimate.
pub const T1_MS: u64 = 500;
/// Timer J (and H): how long a final response is kept for retransmissions, 64·T1.
pub const TIMER_J_MS: u64 = 64 * T1_MS;
/// At most this many transactions are remembered; a flood of new branches pushes out the oldest.
pub const MAX_TRANSACTIONS: usize = 100_000;

#[derive(Debug, PartialEq, Eq)]
pub enum Lookup {
    /// Not seen before: the transaction user answers it.
    New,
    /// A retransmission: send this again.
    Retransmit(SocketAddr, Vec<u8>),
}

#[derive(Default)]
pub struct Transactions {
    answered: HashMap<String, (SocketAddr, Vec<u8>)>,
    expiry: VecDeque<(u64, String)>,
}

impl Transactions {
    fn expire(&mut self, now_ms: u64) {
        while let Some((at, _)) = self.expiry.front() {
            if *at > now_ms && self.answered.len() <= MAX_TRANSACTIONS {
                break;
            }
            if let Some((_, key)) = self.expiry.pop_front() {
                self.answered.remove(&key);
            }
        }
    }

    pub fn lookup(&mut self, key: &str, now_ms: u64) -> Lookup {
        self.expire(now_ms);
        match self.answered.get(key) {
            Some((to, bytes)) => Lookup::Retransmit(*to, bytes.clone()),
            None => Lookup::New,
        }
    }

    /// Keeps the final response of transaction `key` for retransmissions.
    pub fn answered(&mut self, key: String, to: SocketAddr, bytes: Vec<u8>, now_ms: u64) {
        if self.answered.insert(key.clone(), (to, bytes)).is_none() {
            self.expiry.push_back((now_ms + TIMER_J_MS, key));
        }
        self.expire(now_ms);
    }

    /// Whether a transaction `key` is remembered (an ACK to a non-2xx answer is absorbed by it).
    pub fn knows(&self, key: &str) -> bool {
        self.answered.contains_key(key)
    }

    pub fn len(&self) -> usize {
        self.answered.len()
    }

    pub fn is_empty(&self) -> bool {
        self.answered.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_retransmission_gets_the_same_answer_until_timer_j() {
        let to: SocketAddr = "127.0.0.1:5071".parse().unwrap();
        let mut t = Transactions::default();
        assert_eq!(t.lookup("b1", 0), Lookup::New);
        t.answered("b1".into(), to, b"SIP/2.0 200 OK".to_vec(), 0);
        assert_eq!(t.lookup("b1", TIMER_J_MS - 1), Lookup::Retransmit(to, b"SIP/2.0 200 OK".to_vec()));
        assert_eq!(t.lookup("b1", TIMER_J_MS), Lookup::New, "forgotten after Timer J");
        assert!(t.is_empty());
    }
}
