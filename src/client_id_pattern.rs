//! `[auth] client_id_pattern`: the client ids a user may connect with, such as `"%u-*"` (ids
//! that start with the username and a dash). `%u` stands for the client's username (taken
//! literally: a `*` in a username is no wildcard), `*` for any run of characters, `%%` for a
//! `%`; everything else must match exactly. An anonymous client matches no pattern with `%u`.

use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq)]
enum Piece {
    Literal(String),
    Username,
    Any,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientIdPattern {
    pieces: Vec<Piece>,
}

/// Why a pattern could not be read; the config names the key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PatternError {
    #[error("is empty: leave the key out to allow any client id")]
    Empty,
    #[error("`%{0}` is not a placeholder: use `%u` for the username, `%%` for a `%`")]
    UnknownPlaceholder(char),
    #[error("ends with a lone `%`: use `%%` for a `%`")]
    TrailingPercent,
}

impl ClientIdPattern {
    pub fn parse(pattern: &str) -> Result<ClientIdPattern, PatternError> {
        if pattern.is_empty() {
            return Err(PatternError::Empty);
        }
        let mut pieces = Vec::new();
        let mut literal = String::new();
        let mut chars = pattern.chars();
        while let Some(c) = chars.next() {
            let piece = match c {
                '*' => Piece::Any,
                '%' => match chars.next() {
                    Some('u') => Piece::Username,
                    Some('%') => {
                        literal.push('%');
                        continue;
                    }
                    Some(other) => return Err(PatternError::UnknownPlaceholder(other)),
                    None => return Err(PatternError::TrailingPercent),
                },
                other => {
                    literal.push(other);
                    continue;
                }
            };
            if !literal.is_empty() {
                pieces.push(Piece::Literal(std::mem::take(&mut literal)));
            }
            pieces.push(piece);
        }
        if !literal.is_empty() {
            pieces.push(Piece::Literal(literal));
        }
        Ok(ClientIdPattern { pieces })
    }

    /// The pattern with `username` put in, one element a character and `None` a wildcard;
    /// none for an anonymous client where the pattern needs a username.
    fn resolve(&self, username: Option<&str>) -> Option<Vec<Option<char>>> {
        let mut resolved = Vec::new();
        for piece in &self.pieces {
            match piece {
                Piece::Literal(text) => resolved.extend(text.chars().map(Some)),
                Piece::Username => resolved.extend(username?.chars().map(Some)),
                Piece::Any => resolved.push(None),
            }
        }
        Some(resolved)
    }

    /// Whether a client logged in as `username` (none: anonymous) may use `client_id`.
    pub fn allows(&self, username: Option<&str>, client_id: &str) -> bool {
        let text: Vec<char> = client_id.chars().collect();
        self.resolve(username)
            .is_some_and(|pattern| wildcard_match(&pattern, &text))
    }

    /// A client id that fits the pattern, for a client that asked the broker to assign one:
    /// the first wildcard becomes `unique`, the others nothing. None for an anonymous client
    /// where the pattern needs a username.
    pub fn assign(&self, username: Option<&str>, unique: &str) -> Option<String> {
        let mut id = String::new();
        let mut unique = Some(unique);
        for element in self.resolve(username)? {
            match element {
                Some(c) => id.push(c),
                None => id.push_str(unique.take().unwrap_or("")),
            }
        }
        Some(id)
    }
}

impl fmt::Display for ClientIdPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for piece in &self.pieces {
            match piece {
                Piece::Literal(text) => f.write_str(&text.replace('%', "%%"))?,
                Piece::Username => f.write_str("%u")?,
                Piece::Any => f.write_str("*")?,
            }
        }
        Ok(())
    }
}

/// `*`-wildcard matching (`None` in `pattern`): a scan that backtracks only to the last
/// wildcard seen, so its cost is bounded by the product of the lengths, whatever the number
/// of wildcards.
fn wildcard_match(pattern: &[Option<char>], text: &[char]) -> bool {
    let (mut p, mut t) = (0, 0);
    let mut last_wildcard: Option<(usize, usize)> = None;
    while t < text.len() {
        match pattern.get(p) {
            Some(Some(c)) if *c == text[t] => {
                p += 1;
                t += 1;
            }
            Some(None) => {
                last_wildcard = Some((p, t));
                p += 1;
            }
            _ => match last_wildcard {
                // The wildcard takes one more character and the rest is tried again.
                Some((wildcard, taken_to)) => {
                    last_wildcard = Some((wildcard, taken_to + 1));
                    p = wildcard + 1;
                    t = taken_to + 1;
                }
                None => return false,
            },
        }
    }
    pattern[p..].iter().all(Option::is_none)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn allows(pattern: &str, username: Option<&str>, id: &str) -> bool {
        ClientIdPattern::parse(pattern)
            .unwrap()
            .allows(username, id)
    }

    #[test]
    fn the_username_prefix_rule() {
        assert!(allows("%u-*", Some("alice"), "alice-1"));
        assert!(allows("%u-*", Some("alice"), "alice-"));
        assert!(!allows("%u-*", Some("alice"), "alice"));
        assert!(!allows("%u-*", Some("alice"), "bob-1"));
        assert!(!allows("%u-*", Some("alice"), "xalice-1"));
        assert!(!allows("%u-*", None, "alice-1"), "anonymous");
        assert!(allows("dev-*", None, "dev-7"));
        assert!(allows("*-%u", Some("a"), "x-y-a"));
        assert!(allows("%u", Some("a*"), "a*"));
        assert!(!allows("%u", Some("a*"), "ab"), "a username is literal");
        assert!(allows("100%%-*", None, "100%-x"));
    }

    #[test]
    fn bad_patterns_say_why() {
        assert_eq!(ClientIdPattern::parse(""), Err(PatternError::Empty));
        assert_eq!(
            ClientIdPattern::parse("%c-*"),
            Err(PatternError::UnknownPlaceholder('c'))
        );
        assert_eq!(
            ClientIdPattern::parse("x%"),
            Err(PatternError::TrailingPercent)
        );
        assert_eq!(
            ClientIdPattern::parse("%u-*-%%").unwrap().to_string(),
            "%u-*-%%"
        );
    }

    #[test]
    fn an_assigned_id_fits_its_pattern() {
        let pattern = ClientIdPattern::parse("%u-*").unwrap();
        let id = pattern.assign(Some("alice"), "0123").unwrap();
        assert_eq!(id, "alice-0123");
        assert!(pattern.allows(Some("alice"), &id));
        assert_eq!(pattern.assign(None, "0123"), None);
    }

    #[test]
    fn many_wildcards_stay_cheap() {
        let pattern = "*a*a*a*a*a*a*a*a*b";
        let text = "a".repeat(60);
        assert!(!allows(pattern, None, &text));
    }
}
