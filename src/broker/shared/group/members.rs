//! A group's members: joining, leaving (and what becomes of a group left empty), and their
//! read checks.

use std::sync::Arc;

use crate::broker::acl::ReadGuard;
use crate::broker::delivery::Mailbox;
use crate::broker::events::EventKind;
use crate::broker::message::SessionId;
use crate::broker::shared::Membership;
use crate::strategy::MemberInfo;

use super::{unix_millis, AfterLeave, GroupState, Member, SharedGroup};

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
        let load = session.load();
        state
            .dispatcher
            .member_joined(&info, &self.strategy_counters);
        state
            .dispatcher
            .update_load(info.id, load, &self.strategy_counters);
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
        state
            .dispatcher
            .member_left(session_id, &self.strategy_counters);
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

    pub fn member_count(&self) -> usize {
        self.state.lock().members.len()
    }
}
