//! Following one analysis over its WebSocket, sans-IO: where to resume from, which
//! events are new, and what a close means. The node's `watch`, the soak run and the
//! benchmarks drive it; the browser client (`client/stagecast.js`) keeps the same rules
//! and is checked against the same cases (`client/test/fixtures/follower-cases.json`).

use crate::close::{CloseCode, Reconnect};
use crate::ws::ServerMessage;

/// What to do with a stored event that arrived.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arrival {
    /// Deliver it: it is the next one.
    New,
    /// Drop it: it was delivered before a reconnect.
    Repeat,
    /// Events are missing before it: drop the socket and resume from [`Follower::since`].
    Gap,
}

/// What to do after the socket closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AfterClose {
    /// Reconnect with backoff and `since` = [`Follower::since`].
    Reconnect,
    /// Get a fresh token first, then reconnect.
    ReconnectWithNewToken,
    /// Stop: retrying cannot help.
    Stop,
}

/// The follower of one analysis. Feed it every hello, event and close.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Follower {
    last_seq: u64,
    /// After a hello with `recovered: false` the next event may skip dropped history.
    gap_allowed: bool,
    /// A 4001 was answered with a fresh token and no hello came since: another 4001 stops.
    auth_retried: bool,
}

impl Follower {
    /// A follower that replays from `since` (0: the whole history).
    pub fn new(since: u64) -> Self {
        Self {
            last_seq: since,
            gap_allowed: false,
            auth_retried: false,
        }
    }

    /// The seq of the last event delivered: the next connection's `since`.
    pub fn since(&self) -> u64 {
        self.last_seq
    }

    /// A hello arrived: the snapshot's `last_seq`, the hello's `resumed_from` and `recovered`.
    pub fn on_hello(&mut self, snapshot_last_seq: u64, resumed_from: Option<u64>, recovered: bool) {
        match resumed_from {
            // Nothing replays: the snapshot stands for the past.
            None => self.last_seq = self.last_seq.max(snapshot_last_seq),
            // The history started over (deleted after retention, then created again).
            Some(_) if !recovered && snapshot_last_seq < self.last_seq => {
                self.last_seq = snapshot_last_seq
            }
            Some(_) => {}
        }
        self.gap_allowed = !recovered;
        self.auth_retried = false;
    }

    /// A stored event with `seq` arrived.
    pub fn on_event(&mut self, seq: u64) -> Arrival {
        if seq <= self.last_seq {
            return Arrival::Repeat;
        }
        if seq > self.last_seq + 1 && !self.gap_allowed {
            return Arrival::Gap;
        }
        self.gap_allowed = false;
        self.last_seq = seq;
        Arrival::New
    }

    /// Feeds a server message: for an event, whether it is new; `None` for the others
    /// (a hello updates the follower).
    pub fn on_message(&mut self, message: &ServerMessage) -> Option<Arrival> {
        match message {
            ServerMessage::Hello {
                snapshot,
                resumed_from,
                recovered,
                ..
            } => {
                self.on_hello(snapshot.last_seq, *resumed_from, *recovered);
                None
            }
            ServerMessage::Event(stored) => Some(self.on_event(stored.seq)),
            _ => None,
        }
    }

    /// The socket closed with `code` (`None`: no close frame, the connection dropped).
    /// `can_refresh_token`: whether the follower can get a new token by itself.
    pub fn on_close(&mut self, code: Option<u16>, can_refresh_token: bool) -> AfterClose {
        let Some(reconnect) = code
            .and_then(CloseCode::from_code)
            .map(CloseCode::reconnect)
        else {
            // Abnormal closes (1005, 1006, a client's own 4000) are network trouble.
            return AfterClose::Reconnect;
        };
        match reconnect {
            Reconnect::Never => AfterClose::Stop,
            Reconnect::WithNewToken if !can_refresh_token || self.auth_retried => AfterClose::Stop,
            Reconnect::WithNewToken => {
                self.auth_retried = true;
                AfterClose::ReconnectWithNewToken
            }
            Reconnect::WithNewTokenSinceLastSeq if can_refresh_token => {
                AfterClose::ReconnectWithNewToken
            }
            Reconnect::WithNewTokenSinceLastSeq => AfterClose::Stop,
            Reconnect::WithBackoff | Reconnect::WithoutResending | Reconnect::SinceLastSeq => {
                AfterClose::Reconnect
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeats_are_dropped_and_a_gap_asks_for_a_resume() {
        let mut f = Follower::new(0);
        f.on_hello(3, Some(0), true);
        assert_eq!(f.on_event(1), Arrival::New);
        assert_eq!(f.on_event(1), Arrival::Repeat);
        assert_eq!(f.on_event(3), Arrival::Gap);
        assert_eq!(f.since(), 1);
        assert_eq!(f.on_event(2), Arrival::New);
        assert_eq!(f.since(), 2);
    }

    #[test]
    fn an_unrecovered_hello_lets_the_next_event_skip_dropped_history() {
        let mut f = Follower::new(5);
        f.on_hello(900, Some(5), false);
        assert_eq!(f.on_event(801), Arrival::New);
        assert_eq!(f.on_event(803), Arrival::Gap);
    }

    #[test]
    fn a_hello_without_replay_stands_for_the_past() {
        let mut f = Follower::new(0);
        f.on_hello(7, None, true);
        assert_eq!(f.since(), 7);
        assert_eq!(f.on_event(7), Arrival::Repeat);
        assert_eq!(f.on_event(8), Arrival::New);
    }

    #[test]
    fn a_history_that_started_over_is_followed_from_its_start() {
        let mut f = Follower::new(40);
        f.on_hello(2, Some(40), false);
        assert_eq!(f.since(), 2);
        assert_eq!(f.on_event(3), Arrival::New);
    }

    #[test]
    fn one_fresh_token_per_run_of_4001s() {
        let mut f = Follower::new(0);
        assert_eq!(
            f.on_close(Some(4001), true),
            AfterClose::ReconnectWithNewToken
        );
        assert_eq!(f.on_close(Some(4001), true), AfterClose::Stop);
        f.on_hello(0, Some(0), true);
        assert_eq!(
            f.on_close(Some(4001), true),
            AfterClose::ReconnectWithNewToken
        );
        assert_eq!(f.on_close(Some(4001), false), AfterClose::Stop);
    }

    #[test]
    fn close_codes_map_to_actions() {
        let mut f = Follower::new(0);
        for (code, refresh, action) in [
            (None, false, AfterClose::Reconnect),
            (Some(1006), false, AfterClose::Reconnect),
            (Some(1000), true, AfterClose::Stop),
            (Some(1012), false, AfterClose::Reconnect),
            (Some(1013), false, AfterClose::Reconnect),
            (Some(4003), true, AfterClose::Stop),
            (Some(4400), true, AfterClose::Stop),
            (Some(4008), false, AfterClose::Reconnect),
            (Some(4009), false, AfterClose::Reconnect),
            (Some(4010), true, AfterClose::ReconnectWithNewToken),
            (Some(4010), false, AfterClose::Stop),
        ] {
            assert_eq!(
                f.on_close(code, refresh),
                action,
                "{code:?} refresh={refresh}"
            );
        }
    }
}
