//! Who a session belongs to. A client id names a session; it is not a key to it. The identity
//! that created a session (its username, which a TLS listener with `use_identity_as_username`
//! takes from the client certificate, or none) owns it for the session's whole life: a CONNECT
//! from another identity with that client id is refused, and neither the session nor its
//! connection is touched (README, "Session ownership").

use bytestring::ByteString;

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Owner {
    /// Created by a client that sent no username: only another anonymous client may resume
    /// or replace it.
    #[default]
    Anonymous,
    /// Created by a client that logged in as this user.
    User(ByteString),
    /// Put back from a store written before owners were recorded: the first identity that
    /// resumes it becomes its owner, so an upgrade locks nobody out of their own session.
    Unrecorded,
}

impl Owner {
    /// The identity a connection claims a session as.
    pub fn of(username: Option<&ByteString>) -> Owner {
        match username {
            Some(name) => Owner::User(name.clone()),
            None => Owner::Anonymous,
        }
    }

    /// Whether `claimant` may resume or replace a session this one owns.
    pub fn admits(&self, claimant: &Owner) -> bool {
        matches!(self, Owner::Unrecorded) || self == claimant
    }

    /// The username the session's messages (its will) are published under.
    pub fn username(&self) -> Option<&ByteString> {
        match self {
            Owner::User(name) => Some(name),
            Owner::Anonymous | Owner::Unrecorded => None,
        }
    }

    /// How logs name it.
    pub fn describe(&self) -> &str {
        match self {
            Owner::User(name) => name,
            Owner::Anonymous => "(anonymous)",
            Owner::Unrecorded => "(unrecorded)",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_same_identity_is_admitted() {
        let alice = Owner::of(Some(&ByteString::from("alice")));
        let bob = Owner::of(Some(&ByteString::from("bob")));
        let anonymous = Owner::of(None);
        assert!(alice.admits(&alice));
        assert!(!alice.admits(&bob));
        assert!(!alice.admits(&anonymous));
        assert!(anonymous.admits(&anonymous));
        assert!(!anonymous.admits(&alice));
        assert!(Owner::Unrecorded.admits(&alice));
        assert!(Owner::Unrecorded.admits(&anonymous));
    }
}
