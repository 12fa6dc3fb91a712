//! The least privileges of a tenant's broker user.
//!
//! A tenant publishes requests to `<ns>.intake` and reads its replies from
//! its own queues, `<ns>.reply.<user>.…`; it can reach nothing else: not the
//! default exchange (which would reach every queue by name), not the phase
//! exchange or queues, not the dead-letter queues, not another tenant's
//! reply queues. RabbitMQ's `user_id` check ties each request to the user,
//! and netra maps the user to its tenant. Names here are prefixes and user
//! names restricted to letters, digits, `-` and `_`, so they are literal in
//! a regular expression (apart from the escaped dots).

use super::topology::Names;

/// RabbitMQ permission patterns for one user: configure, write, read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Permissions {
    /// Resources the user may declare or delete.
    pub configure: String,
    /// Resources the user may publish to (or bind to).
    pub write: String,
    /// Resources the user may consume from (or bind from).
    pub read: String,
}

fn escape(name: &str) -> String {
    name.replace('.', "\\.")
}

/// The permissions of `user`, a tenant's broker user, in namespace `names`.
pub fn for_tenant(names: &Names, user: &str) -> Permissions {
    let replies = format!("^{}.*$", escape(&names.reply_prefix(user)));
    Permissions {
        configure: replies.clone(),
        write: format!("^{}$", escape(&names.intake_exchange())),
        read: replies,
    }
}

/// The `rabbitmqctl` command that sets them (on virtual host `vhost`).
pub fn rabbitmqctl_command(vhost: &str, user: &str, p: &Permissions) -> String {
    format!(
        "rabbitmqctl set_permissions -p '{vhost}' '{user}' '{}' '{}' '{}'",
        p.configure, p.write, p.read
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tenant_user_may_write_only_the_intake_exchange() {
        let p = for_tenant(&Names::new("netra"), "acme");
        assert_eq!(p.write, "^netra\\.intake$");
        assert_eq!(p.configure, "^netra\\.reply\\.acme\\..*$");
        assert_eq!(p.read, p.configure);
        assert!(rabbitmqctl_command("/", "acme", &p).contains("'^netra\\.intake$'"));
    }
}
