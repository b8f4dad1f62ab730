//! A group's members: joining, leaving (and what becomes of a group left empty), and their
//! read checks.

use std::sync::Arc;

use crate::broker::acl::ReadGuard;
use crate::broker::delivery::Mailbox;
use crate::broker::events::EventKind;
use crate::broker::message::SessionId;
use crate::broker::shared::Membership;
use crate::strategy::MemberInfo;

use super::{unix_millis, AfterLeave, GroupState, Member, MembershipNews, SharedGroup};

impl SharedGroup {
    /// Adds `session` as a member, or updates its options if it already is one.
    pub fn add_member(&self, session: Arc<dyn Mailbox>, membership: Membership) {
        let Membership {
            options,
            identifier,
            weight,
            user_properties,
            read,
        } = membership;
        let mut state = self.state.lock();
        state.ended = false;
        let id = session.session_id();
        if let Some(&index) = state.index_of.get(&id) {
            let member = &mut state.members[index];
            member.options = options;
            member.identifier = identifier;
            member.read = read;
            return;
        }
        state.epoch += 1;
        let info = MemberInfo {
            id,
            client_id: session.client_id().clone(),
            weight,
            subscribed_at_ms: unix_millis(),
            user_properties,
        };
        // The strategy hears it later, under this group's lock alone: the caller may hold the
        // topic tree's.
        state
            .membership_news
            .push(MembershipNews::Joined(info.clone()));
        self.events.emit(
            EventKind::MemberJoined,
            &self.name,
            &self.filter,
            &*info.client_id,
        );
        let index = state.members.len();
        state.index_of.insert(id, index);
        state.members.push(Member {
            session,
            info,
            options,
            identifier,
            read,
            dispatched: 0,
        });
    }

    /// Replaces member `id`'s read check, if it is a member.
    pub fn renew_read_guard(&self, id: SessionId, read: Option<Arc<ReadGuard>>) {
        let mut state = self.state.lock();
        if let Some(&index) = state.index_of.get(&id) {
            state.members[index].read = read;
        }
    }

    /// Removes a member; `None` if `session_id` was not one. A group left empty ends, unless it
    /// is declared or `linger` asks it to keep collecting for a while.
    pub fn remove_member(&self, session_id: SessionId, linger: bool) -> Option<AfterLeave> {
        let mut state = self.state.lock();
        let index = state.index_of.remove(&session_id)?;
        let left = state.members.remove(index);
        let GroupState {
            members, index_of, ..
        } = &mut *state;
        for (moved, member) in members.iter().enumerate().skip(index) {
            index_of.insert(member.info.id, moved);
        }
        self.events.emit(
            EventKind::MemberLeft,
            &self.name,
            &self.filter,
            &*left.info.client_id,
        );
        state.membership_news.push(MembershipNews::Left(session_id));
        if !state.members.is_empty() {
            if state.cursor >= state.members.len() {
                state.cursor = 0;
            }
            return Some(AfterLeave::Continues);
        }
        state.cursor = 0;
        if state.declared {
            return Some(AfterLeave::Continues);
        }
        if linger {
            state.epoch += 1;
            return Some(AfterLeave::Lingers { epoch: state.epoch });
        }
        self.end_locked(&mut state);
        Some(AfterLeave::Ended)
    }

    /// Tells the group's strategy the joins and leaves it has not heard yet, in order. Called
    /// by whoever added or removed members, once the topic tree's lock is released: a guest
    /// call may take up to the plugin deadline, and must hold up this group alone.
    pub fn announce_membership(&self) {
        let mut state = self.state.lock();
        self.hear_membership_locked(&mut state);
    }

    /// Delivers pending membership news to the strategy; cheap when there is none. Also run
    /// before the strategy chooses, so it never chooses from a stale member list.
    pub(super) fn hear_membership_locked(&self, state: &mut GroupState) {
        if state.membership_news.is_empty() {
            return;
        }
        let news = std::mem::take(&mut state.membership_news);
        let GroupState {
            dispatcher,
            members,
            index_of,
            ..
        } = state;
        for item in news {
            match item {
                MembershipNews::Joined(info) => {
                    dispatcher.member_joined(&info, &self.strategy_counters);
                    // Its state now; a member already gone again has a leave queued after.
                    if let Some(&index) = index_of.get(&info.id) {
                        let load = members[index].session.load();
                        dispatcher.update_load(info.id, load, &self.strategy_counters);
                    }
                }
                MembershipNews::Left(id) => dispatcher.member_left(id, &self.strategy_counters),
            }
        }
    }

    pub fn member_count(&self) -> usize {
        self.state.lock().members.len()
    }
}
