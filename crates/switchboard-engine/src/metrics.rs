//! Prometheus counters for what matters: requests, calls by state, notifications.
//!
//! A handful of atomics rendered by hand in the text exposition format; no registry crate needed.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

use switchboard_core::call::CallState;

#[derive(Default)]
pub struct Counter(AtomicU64);

impl Counter {
    pub fn inc(&self) {
        self.add(1);
    }
    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// The upper bounds (ms) of the answer-latency buckets.
pub const ANSWER_BUCKETS_MS: [u64; 9] = [50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 15_000];

/// A cumulative histogram of milliseconds, rendered as Prometheus buckets.
#[derive(Default)]
pub struct Histogram {
    buckets: [AtomicU64; 9],
    count: AtomicU64,
    sum_ms: AtomicU64,
}

impl Histogram {
    fn observe(&self, ms: u64) {
        for (i, bound) in ANSWER_BUCKETS_MS.iter().enumerate() {
            if ms <= *bound {
                self.buckets[i].fetch_add(1, Ordering::Relaxed);
            }
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_ms.fetch_add(ms, Ordering::Relaxed);
    }
}

#[derive(Default)]
pub struct Metrics {
    /// HTTP responses by (route family, status code).
    requests: Mutex<BTreeMap<(&'static str, u16), u64>>,
    calls_by_state: [AtomicI64; 9],
    pub calls_created: Counter,
    pub notifications_delivered: Counter,
    pub notifications_retried: Counter,
    pub notifications_failed: Counter,
    pub notification_posts: Counter,
    pub notifications_pending: AtomicI64,
    /// Calls adopted from nodes whose leases ran out.
    pub leases_taken_over: Counter,
    /// Nodes whose leases ran out and whose calls this node adopted.
    pub nodes_taken_over: Counter,
    /// Requests sent on to the node that owns their call.
    pub requests_forwarded: Counter,
    /// Calls another node handed over to this one (consultative transfers across nodes).
    pub calls_handed_over: Counter,
    /// Faults injected into notifications, by kind.
    faults: Mutex<BTreeMap<&'static str, u64>>,
    /// SIP requests answered, by status code.
    sip_answers: Mutex<BTreeMap<u16, u64>>,
    /// SIP requests answered again from their transaction (UDP retransmissions).
    pub sip_retransmitted: Counter,
    /// SIP messages too broken to answer.
    pub sip_dropped: Counter,
    /// TCP connections of our own to phones that could not be opened.
    pub sip_tcp_connect_failed: Counter,
    /// Contacts registered now.
    pub sip_registered: AtomicI64,
    /// RTP packets sent (comfort audio) and received from phones.
    pub rtp_sent: Counter,
    /// Of those, packets of prompts (`playPrompt` over SIP).
    pub rtp_prompt_sent: Counter,
    /// RTP packets of a conference's mixed audio sent to phones.
    pub rtp_mixed_sent: Counter,
    pub rtp_received: Counter,
    /// Transfers by (kind, outcome, reason): started, completed, failed with `code/subcode`.
    transfers: Mutex<BTreeMap<(&'static str, &'static str, String), u64>>,
    /// How long bots take to answer an incoming call: a histogram in milliseconds.
    answer_latency: Histogram,
    /// Notifications not sent because the callback policy refuses their callback.
    pub callbacks_refused: Counter,
    /// Delivery failures not logged, because the same callback's was less than a minute ago.
    pub notification_logs_left_out: Counter,
    /// HTTP connections closed because a request's head did not arrive in time.
    pub http_header_timeouts: Counter,
    /// HTTP connections closed for being idle too long between requests.
    pub http_idle_closed: Counter,
    /// HTTP connections refused (503) for being over `max_connections`.
    pub http_connections_shed: Counter,
    /// Requests refused (503) because the budget for request bodies in memory was spent.
    pub http_bodies_shed: Counter,
    /// HTTP connections open now.
    pub http_connections_open: AtomicI64,
    /// The node these figures are from (`--node-id`).
    node: std::sync::OnceLock<String>,
}

fn index(state: CallState) -> usize {
    CallState::ALL.iter().position(|s| *s == state).unwrap_or(0)
}

impl Metrics {
    /// A transfer started (`blind` or `consultative`).
    pub fn transfer_started(&self, kind: &'static str) {
        self.count_transfer(kind, "started", String::new());
    }

    /// A transfer ended: `completed`, or `failed` with the `code/subcode` it failed with.
    pub fn transfer_ended(&self, kind: &'static str, outcome: &'static str, reason: String) {
        self.count_transfer(kind, outcome, reason);
    }

    fn count_transfer(&self, kind: &'static str, outcome: &'static str, reason: String) {
        *self.transfers.lock().unwrap_or_else(|e| e.into_inner()).entry((kind, outcome, reason)).or_default() += 1;
    }

    /// A bot answered an incoming call `ms` after it was offered.
    pub fn bot_answered(&self, ms: u64) {
        self.answer_latency.observe(ms);
    }

    pub fn request(&self, family: &'static str, status: u16) {
        let mut m = self.requests.lock().unwrap_or_else(|e| e.into_inner());
        *m.entry((family, status)).or_default() += 1;
    }

    pub fn fault(&self, kind: &'static str) {
        *self.faults.lock().unwrap_or_else(|e| e.into_inner()).entry(kind).or_default() += 1;
    }

    pub fn sip_answered(&self, code: u16) {
        *self.sip_answers.lock().unwrap_or_else(|e| e.into_inner()).entry(code).or_default() += 1;
    }

    pub fn call_entered(&self, state: CallState) {
        self.calls_by_state[index(state)].fetch_add(1, Ordering::Relaxed);
    }

    pub fn call_left(&self, state: CallState) {
        self.calls_by_state[index(state)].fetch_sub(1, Ordering::Relaxed);
    }

    /// Names the node in every scrape; the first name given sticks.
    pub fn set_node(&self, node: &str) {
        let _ = self.node.set(node.to_owned());
    }

    pub fn render(&self) -> String {
        let mut out = String::new();
        if let Some(node) = self.node.get() {
            let _ = writeln!(
                out,
                "# HELP switchboard_node The node these figures are from.\n# TYPE switchboard_node gauge\nswitchboard_node{{node=\"{node}\"}} 1"
            );
        }
        out.push_str("# HELP switchboard_http_requests_total HTTP responses by route family and status.\n# TYPE switchboard_http_requests_total counter\n");
        for ((family, status), n) in self.requests.lock().unwrap_or_else(|e| e.into_inner()).iter() {
            let _ = writeln!(out, "switchboard_http_requests_total{{family=\"{family}\",status=\"{status}\"}} {n}");
        }
        let owned: i64 = CallState::ALL
            .iter()
            .filter(|s| **s != CallState::Terminated)
            .map(|s| self.calls_by_state[index(*s)].load(Ordering::Relaxed))
            .sum();
        let _ = writeln!(
            out,
            "# HELP switchboard_calls_owned Live calls this node owns (holds their legs and timers).\n# TYPE switchboard_calls_owned gauge\nswitchboard_calls_owned {owned}"
        );
        out.push_str("# HELP switchboard_calls Live calls by state.\n# TYPE switchboard_calls gauge\n");
        for s in CallState::ALL.iter().filter(|s| **s != CallState::Terminated) {
            let _ =
                writeln!(out, "switchboard_calls{{state=\"{}\"}} {}", s.as_str(), self.calls_by_state[index(*s)].load(Ordering::Relaxed));
        }
        let counters = [
            ("switchboard_calls_created_total", "Calls created (incoming and outgoing).", &self.calls_created),
            ("switchboard_notifications_delivered_total", "Notifications the bot acknowledged with a 2xx.", &self.notifications_delivered),
            (
                "switchboard_notifications_retried_total",
                "Notification deliveries that failed and were rescheduled.",
                &self.notifications_retried,
            ),
            (
                "switchboard_notifications_failed_total",
                "Notifications given up on after the last retry (kept in the outbox).",
                &self.notifications_failed,
            ),
            (
                "switchboard_notification_posts_total",
                "commsNotifications POSTs attempted (each may batch several).",
                &self.notification_posts,
            ),
            ("switchboard_leases_taken_over_total", "Calls adopted from nodes whose leases ran out.", &self.leases_taken_over),
            ("switchboard_nodes_taken_over_total", "Dead nodes whose calls this node adopted.", &self.nodes_taken_over),
            ("switchboard_requests_forwarded_total", "Requests sent on to the node that owns their call.", &self.requests_forwarded),
            ("switchboard_calls_handed_over_total", "Calls other nodes handed over to this one.", &self.calls_handed_over),
            (
                "switchboard_callbacks_refused_total",
                "Notifications not sent: the callback policy refuses their callback.",
                &self.callbacks_refused,
            ),
            (
                "switchboard_notification_logs_left_out_total",
                "Delivery failures not logged (the same callback's was logged less than a minute before).",
                &self.notification_logs_left_out,
            ),
            ("switchboard_http_header_timeouts_total", "Connections closed: a request head came too slowly.", &self.http_header_timeouts),
            ("switchboard_http_idle_closed_total", "Connections closed after being idle too long.", &self.http_idle_closed),
            ("switchboard_http_connections_shed_total", "Connections refused with 503 over max_connections.", &self.http_connections_shed),
            ("switchboard_http_bodies_shed_total", "Requests refused with 503: too many request bodies in memory.", &self.http_bodies_shed),
        ];
        for (name, help, c) in counters {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter\n{name} {}", c.get());
        }
        let sip = self.sip_answers.lock().unwrap_or_else(|e| e.into_inner());
        if !sip.is_empty() {
            out.push_str("# HELP switchboard_sip_responses_total SIP requests answered, by status code.\n# TYPE switchboard_sip_responses_total counter\n");
            for (code, n) in sip.iter() {
                let _ = writeln!(out, "switchboard_sip_responses_total{{code=\"{code}\"}} {n}");
            }
        }
        drop(sip);
        let _ = writeln!(
            out,
            "# HELP switchboard_sip_retransmissions_total SIP requests answered again from their transaction.\n# TYPE switchboard_sip_retransmissions_total counter\nswitchboard_sip_retransmissions_total {}\n# HELP switchboard_sip_dropped_total SIP messages too broken to answer.\n# TYPE switchboard_sip_dropped_total counter\nswitchboard_sip_dropped_total {}\n# HELP switchboard_sip_tcp_connect_failures_total TCP connections to phones (contacts with transport=tcp) that could not be opened.\n# TYPE switchboard_sip_tcp_connect_failures_total counter\nswitchboard_sip_tcp_connect_failures_total {}\n# HELP switchboard_sip_registered Contacts registered over SIP now.\n# TYPE switchboard_sip_registered gauge\nswitchboard_sip_registered {}",
            self.sip_retransmitted.get(),
            self.sip_dropped.get(),
            self.sip_tcp_connect_failed.get(),
            self.sip_registered.load(Ordering::Relaxed)
        );
        let _ = writeln!(
            out,
            "# HELP switchboard_rtp_sent_total RTP packets of audio (comfort audio and prompts) sent to phones.\n# TYPE switchboard_rtp_sent_total counter\nswitchboard_rtp_sent_total {}\n# HELP switchboard_rtp_prompt_sent_total RTP packets of prompts sent to phones.\n# TYPE switchboard_rtp_prompt_sent_total counter\nswitchboard_rtp_prompt_sent_total {}\n# HELP switchboard_rtp_mixed_sent_total RTP packets of a group call's mixed audio (what the other phones said) sent to phones.\n# TYPE switchboard_rtp_mixed_sent_total counter\nswitchboard_rtp_mixed_sent_total {}\n# HELP switchboard_rtp_received_total RTP packets received from phones.\n# TYPE switchboard_rtp_received_total counter\nswitchboard_rtp_received_total {}",
            self.rtp_sent.get(),
            self.rtp_prompt_sent.get(),
            self.rtp_mixed_sent.get(),
            self.rtp_received.get()
        );
        let _ = writeln!(
            out,
            "# HELP switchboard_notifications_pending Notifications waiting in the outbox.\n# TYPE switchboard_notifications_pending gauge\nswitchboard_notifications_pending {}",
            self.notifications_pending.load(Ordering::Relaxed)
        );
        out.push_str("# HELP switchboard_transfers_total Transfers by kind (blind, consultative) and outcome (started, completed, failed, with the resultInfo code/subcode of a failure).\n# TYPE switchboard_transfers_total counter\n");
        for ((kind, outcome, reason), n) in self.transfers.lock().unwrap_or_else(|e| e.into_inner()).iter() {
            let _ = writeln!(out, "switchboard_transfers_total{{kind=\"{kind}\",outcome=\"{outcome}\",reason=\"{reason}\"}} {n}");
        }
        out.push_str("# HELP switchboard_bot_answer_latency_ms How long bots took to answer incoming calls, from the offer to the answer.\n# TYPE switchboard_bot_answer_latency_ms histogram\n");
        for (i, bound) in ANSWER_BUCKETS_MS.iter().enumerate() {
            let _ = writeln!(
                out,
                "switchboard_bot_answer_latency_ms_bucket{{le=\"{bound}\"}} {}",
                self.answer_latency.buckets[i].load(Ordering::Relaxed)
            );
        }
        let count = self.answer_latency.count.load(Ordering::Relaxed);
        let _ = writeln!(out, "switchboard_bot_answer_latency_ms_bucket{{le=\"+Inf\"}} {count}");
        let _ = writeln!(out, "switchboard_bot_answer_latency_ms_sum {}", self.answer_latency.sum_ms.load(Ordering::Relaxed));
        let _ = writeln!(out, "switchboard_bot_answer_latency_ms_count {count}");
        out.push_str("# HELP switchboard_notification_faults_total Faults injected into notifications (PUT /sim/v1/apps/{appId}/faults), by kind.\n# TYPE switchboard_notification_faults_total counter\n");
        for (kind, n) in self.faults.lock().unwrap_or_else(|e| e.into_inner()).iter() {
            let _ = writeln!(out, "switchboard_notification_faults_total{{kind=\"{kind}\"}} {n}");
        }
        let _ = writeln!(
            out,
            "# HELP switchboard_http_connections_open HTTP connections open now.\n# TYPE switchboard_http_connections_open gauge\nswitchboard_http_connections_open {}",
            self.http_connections_open.load(Ordering::Relaxed)
        );
        out
    }
}
