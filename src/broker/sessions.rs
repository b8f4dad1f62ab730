//! The sessions registry's business: opening a session for a CONNECT (resume, replace or
//! refuse), ending one, and expiring one whose client did not come back in time.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use bytestring::ByteString;

use crate::topic::{parse_subscription, SubscriptionFilter};

use super::acl;
use super::owner::Owner;
use super::session::{self, Session};
use super::shared::Redelivery;
use super::{BrokerState, OpenedSession, SessionRefused};

impl BrokerState {
    /// Finds the session `claimant` resumes under `client_id`, or makes a new one it owns.
    /// With `clean_start` any existing session is ended first. Refused, with nothing touched,
    /// when the existing session belongs to another identity, or when a new persistent session
    /// would go past `limits.max_sessions`.
    pub fn open_session(
        &self,
        client_id: &ByteString,
        claimant: &Owner,
        clean_start: bool,
        expiry: u32,
    ) -> Result<OpenedSession, SessionRefused> {
        let mut sessions = self.sessions.lock();
        let existing = sessions.get(client_id).filter(|s| !s.is_ended());
        if let Some(existing) = existing {
            if !clean_start {
                // Under the registry's lock, like the expiry's check-and-end: either the
                // expiry ended it first (and it reads as ended here) or it sees this claim.
                if !existing.claim(claimant) {
                    return Err(SessionRefused::NotOwner(existing.owner()));
                }
                return Ok(OpenedSession {
                    session: existing.clone(),
                    present: true,
                    discarded: None,
                });
            }
            if !existing.admits(claimant) {
                return Err(SessionRefused::NotOwner(existing.owner()));
            }
        }
        let max_sessions = self.config.limits.max_sessions;
        if expiry > 0 && max_sessions > 0 && sessions.len() >= max_sessions {
            // Counted only near the bound: below it the registry's size is proof enough.
            let replaced = existing.map(Arc::as_ptr);
            let persistent = sessions
                .values()
                .filter(|s| Some(Arc::as_ptr(s)) != replaced && s.expiry_interval() > 0)
                .count();
            if persistent >= max_sessions {
                return Err(SessionRefused::Quota);
            }
        }
        Ok(self.insert_new_session(&mut sessions, client_id, claimant.clone(), expiry))
    }

    /// Registers a new session under `client_id`, in place of any registered one (returned as
    /// discarded).
    fn insert_new_session(
        &self,
        sessions: &mut HashMap<ByteString, Arc<Session>>,
        client_id: &ByteString,
        owner: Owner,
        expiry: u32,
    ) -> OpenedSession {
        let id = self.next_session_id.fetch_add(1, Ordering::Relaxed);
        let session = Session::new(id, client_id.clone(), owner, expiry, self.journal.clone());
        let discarded = sessions.insert(client_id.clone(), session.clone());
        OpenedSession {
            session,
            present: false,
            discarded,
        }
    }

    /// Registers a session read back from the store: outside every bound, as it was accepted
    /// before the restart.
    pub(super) fn restore_session(
        &self,
        client_id: &ByteString,
        owner: Owner,
        expiry: u32,
    ) -> Arc<Session> {
        let mut sessions = self.sessions.lock();
        self.insert_new_session(&mut sessions, client_id, owner, expiry)
            .session
    }

    /// Ends a session: removes it from the registry (if it is still the registered one), its
    /// subscriptions from the router, and hands its unfinished shared copies to other members.
    pub fn end_session(&self, session: &Arc<Session>) {
        Self::unregister(&mut self.sessions.lock(), session);
        // Its stored rows go too: a session of the same client id that replaces it (Clean
        // Start) stores its own only after this, when its connection attaches.
        let ended = session.end();
        self.clean_up_ended(session, ended);
    }

    /// Ends `session` because its expiry ran out after connection `generation` left, unless a
    /// connection resumed or claimed it meanwhile.
    fn expire_session(&self, session: &Arc<Session>, generation: u64) {
        let ended = {
            let mut sessions = self.sessions.lock();
            let ended = session.end_if_idle_since(generation);
            if ended.is_some() {
                Self::unregister(&mut sessions, session);
            }
            ended
        };
        let Some(ended) = ended else { return };
        tracing::debug!(client_id = %session.client_id, "session expired");
        self.clean_up_ended(session, ended);
    }

    /// Removes `session` from the registry if it is the registered one.
    fn unregister(sessions: &mut HashMap<ByteString, Arc<Session>>, session: &Arc<Session>) {
        if sessions
            .get(&session.client_id)
            .is_some_and(|s| Arc::ptr_eq(s, session))
        {
            sessions.remove(&session.client_id);
        }
    }

    /// What ending a session leaves to the broker: its subscriptions leave the router and its
    /// unfinished shared copies go to other members (its stored rows went when it ended).
    fn clean_up_ended(&self, session: &Arc<Session>, ended: session::EndedSession) {
        for filter in ended.subscriptions.keys() {
            self.remove_from_router(filter, session);
        }
        // Leave any group the subscription map did not mention (defensive: both are kept
        // together, but a group must never keep a dead member).
        for lingering in self.router.leave_all_groups(session.id) {
            self.arm_linger(lingering);
        }
        // A group this session was the last member of still exists here if it lingers or is
        // declared, and keeps these copies for the next member; otherwise they are dropped.
        self.redispatch(
            ended.redispatch,
            Redelivery::SessionEnded,
            &session.client_id,
        );
        tracing::debug!(client_id = %session.client_id, "session ended");
    }

    /// Ends the session now (expiry 0), never (`u32::MAX`), or after its expiry interval unless
    /// a connection resumes it first (`generation` is the detached connection's).
    pub fn schedule_expiry(broker: &Arc<BrokerState>, session: Arc<Session>, generation: u64) {
        let expiry = session.expiry_interval();
        BrokerState::schedule_expiry_in(broker, session, generation, expiry);
    }

    /// Like [`BrokerState::schedule_expiry`], after `expiry` seconds rather than the session's
    /// interval (a restored session has spent part of it while the broker was down).
    pub fn schedule_expiry_in(
        broker: &Arc<BrokerState>,
        session: Arc<Session>,
        generation: u64,
        expiry: u32,
    ) {
        if expiry == 0 {
            broker.end_session(&session);
            return;
        }
        if expiry == u32::MAX {
            return;
        }
        let broker = broker.clone();
        tokio::spawn(async move {
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_secs(u64::from(expiry))) => {}
                _ = broker.shutdown.cancelled() => return,
            }
            broker.expire_session(&session, generation);
        });
    }

    /// Removes one subscription (plain or shared) of `session` from the router.
    pub fn remove_from_router(&self, filter: &str, session: &Arc<Session>) -> bool {
        match parse_subscription(filter, usize::MAX) {
            Ok(SubscriptionFilter::Shared { group, filter }) => {
                let left = self.router.leave_group(group, filter, session.id);
                if let Some(lingering) = left.lingering {
                    self.arm_linger(lingering);
                }
                left.was_member
            }
            Ok(SubscriptionFilter::Plain(filter)) => self.router.unsubscribe(filter, session.id),
            Err(_) => false,
        }
    }

    /// Checks the subscriptions of `session` against the ACL as `who` from now on: called when a
    /// connection takes the session up, so that subscriptions restored from the store (which
    /// does not keep the username; until then they are checked as an anonymous client's) or
    /// made under another login are read-checked for the client now behind them.
    pub(crate) fn renew_read_guards(&self, session: &Arc<Session>, who: acl::Identity<'_>) {
        if self.acl.current().is_none() {
            return;
        }
        for name in session.subscription_filters() {
            match parse_subscription(&name, usize::MAX) {
                Ok(SubscriptionFilter::Shared { group, filter }) => {
                    if let Some(shared) = self.router.group(group, filter) {
                        let read = acl::ReadGuard::new(&self.acl, who, filter);
                        shared.renew_read_guard(session.id, read);
                    }
                }
                Ok(SubscriptionFilter::Plain(filter)) => {
                    let read = acl::ReadGuard::new(&self.acl, who, filter);
                    self.router.renew_read_guard(filter, session.id, read);
                }
                Err(_) => {}
            }
        }
    }
}
