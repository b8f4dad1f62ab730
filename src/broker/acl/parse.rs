//! Reading a Mosquitto `acl_file` (and sharq's `share` rules) into an [`Acl`].

use std::path::Path;

use globset::Glob;

use super::{Access, Acl, AclError, RuleSet, TopicRule};

impl Acl {
    pub fn load(path: &Path) -> Result<Acl, AclError> {
        let text = std::fs::read_to_string(path).map_err(|e| AclError::Read {
            path: path.display().to_string(),
            reason: e.to_string(),
        })?;
        let mut acl = Acl::parse(&text, &path.display().to_string())?;
        acl.path = path.to_path_buf();
        Ok(acl)
    }

    pub fn parse(text: &str, origin: &str) -> Result<Acl, AclError> {
        let mut acl = Acl::default();
        let mut current: Option<String> = None;
        for (index, raw) in text.lines().enumerate() {
            let line = index + 1;
            let syntax = |reason: &str| AclError::Syntax {
                path: origin.to_owned(),
                line,
                reason: reason.to_owned(),
            };
            let trimmed = raw.trim();
            if trimmed.is_empty() || trimmed.starts_with('#') {
                continue;
            }
            let (keyword, rest) = trimmed
                .split_once(char::is_whitespace)
                .map_or((trimmed, ""), |(k, r)| (k, r.trim()));
            match keyword {
                "user" => {
                    if rest.is_empty() {
                        return Err(syntax("`user` needs a username"));
                    }
                    acl.users.entry(rest.to_owned()).or_default();
                    current = Some(rest.to_owned());
                }
                "topic" | "pattern" => {
                    let rule = parse_topic_rule(rest).map_err(|r| syntax(&r))?;
                    if keyword == "pattern" {
                        acl.patterns.push(rule);
                    } else {
                        acl.rule_set(&current).topics.push(rule);
                    }
                }
                "share" => {
                    if rest.is_empty() || rest.contains(char::is_whitespace) {
                        return Err(syntax("`share` needs one group-name glob"));
                    }
                    let glob = Glob::new(rest)
                        .map_err(|e| syntax(&format!("bad glob `{rest}`: {e}")))?
                        .compile_matcher();
                    acl.rule_set(&current).shares.push(glob);
                    acl.restricts_shares = true;
                }
                other => {
                    return Err(syntax(&format!(
                        "unknown keyword `{other}` (expected user, topic, pattern or share)"
                    )))
                }
            }
        }
        Ok(acl)
    }

    fn rule_set(&mut self, user: &Option<String>) -> &mut RuleSet {
        match user {
            Some(name) => self.users.entry(name.clone()).or_default(),
            None => &mut self.anonymous,
        }
    }
}

fn parse_topic_rule(rest: &str) -> Result<TopicRule, String> {
    let (access, filter) = match rest.split_once(char::is_whitespace) {
        Some((word, filter)) => match word {
            "read" => (Access::Read, filter.trim()),
            "write" => (Access::Write, filter.trim()),
            "readwrite" => (Access::ReadWrite, filter.trim()),
            "deny" => (Access::Deny, filter.trim()),
            // No access word: the whole rest is the filter (Mosquitto allows spaces in topics).
            _ => (Access::ReadWrite, rest),
        },
        None => (Access::ReadWrite, rest),
    };
    if filter.is_empty() {
        return Err("a topic rule needs a topic filter".to_owned());
    }
    if crate::topic::validate_filter(filter, usize::MAX).is_err() {
        return Err(format!("`{filter}` is not a valid topic filter"));
    }
    Ok(TopicRule {
        access,
        filter: filter.to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn syntax_errors_name_the_line() {
        let err = Acl::parse("user a\ntopic read a/#/b\n", "f.acl").unwrap_err();
        assert!(err.to_string().contains("f.acl, line 2"), "{err}");
        let err = Acl::parse("topik read a\n", "f.acl").unwrap_err();
        assert!(err.to_string().contains("line 1"), "{err}");
    }
}
