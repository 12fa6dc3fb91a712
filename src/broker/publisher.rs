//! Confirmed publishing: every publish is `mandatory` and waits for the
//! broker's confirm; a nack or a returned (unroutable) message is an error,
//! so nothing is acked upstream until its follow-ups are safely queued.

use lapin::{
    options::{BasicPublishOptions, ConfirmSelectOptions},
    protocol::BasicProperties,
    types::{AMQPValue, FieldTable, ShortString},
    Channel, Confirmation, Connection,
};

use crate::error::InfraError;

/// AMQP persistent delivery mode.
const PERSISTENT: u8 = 2;

/// A channel in confirm mode.
#[derive(Clone)]
pub struct Publisher {
    channel: Channel,
}

/// A message to publish.
#[derive(Debug, Clone, Default)]
pub struct Outgoing {
    /// Exchange (`""` for the default exchange).
    pub exchange: String,
    /// Routing key (the queue name for the default exchange).
    pub routing_key: String,
    /// Body.
    pub body: Vec<u8>,
    /// `message_id` property.
    pub message_id: Option<String>,
    /// `correlation_id` property.
    pub correlation_id: Option<String>,
    /// `reply_to` property.
    pub reply_to: Option<String>,
    /// Headers (string values).
    pub headers: Vec<(String, HeaderValue)>,
}

/// A header value.
#[derive(Debug, Clone)]
pub enum HeaderValue {
    /// Text.
    Text(String),
    /// Integer.
    Int(i64),
}

/// Outcome of a confirmed publish.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Published {
    /// Routed and confirmed.
    Confirmed,
    /// Returned: no queue was bound to receive it.
    Unroutable,
}

impl Publisher {
    /// Opens a channel in confirm mode.
    pub async fn open(conn: &Connection) -> Result<Self, InfraError> {
        let channel = conn.create_channel().await?;
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await?;
        Ok(Self { channel })
    }

    /// True while the channel can publish.
    pub fn is_connected(&self) -> bool {
        self.channel.status().connected()
    }

    /// Publishes and waits for the confirm. A returned message is reported
    /// as [`Published::Unroutable`], a nack as an error.
    pub async fn publish(&self, msg: &Outgoing) -> Result<Published, InfraError> {
        self.publish_as(msg, None).await
    }

    /// Like [`Publisher::publish`], with the `user_id` property set: RabbitMQ
    /// refuses it unless it equals the connection's user, which is what makes
    /// it an authenticated tenant for AMQP requests.
    pub async fn publish_as(
        &self,
        msg: &Outgoing,
        user_id: Option<&str>,
    ) -> Result<Published, InfraError> {
        let mut props = BasicProperties::default()
            .with_content_type(ShortString::from("application/json"))
            .with_delivery_mode(PERSISTENT);
        if let Some(id) = &msg.message_id {
            props = props.with_message_id(ShortString::from(id.as_str()));
        }
        if let Some(c) = &msg.correlation_id {
            props = props.with_correlation_id(ShortString::from(c.as_str()));
        }
        if let Some(r) = &msg.reply_to {
            props = props.with_reply_to(ShortString::from(r.as_str()));
        }
        if let Some(u) = user_id {
            props = props.with_user_id(ShortString::from(u));
        }
        if !msg.headers.is_empty() {
            let mut t = FieldTable::default();
            for (k, v) in &msg.headers {
                let value = match v {
                    HeaderValue::Text(s) => AMQPValue::LongString(s.as_str().into()),
                    HeaderValue::Int(i) => AMQPValue::LongLongInt(*i),
                };
                t.insert(ShortString::from(k.as_str()), value);
            }
            props = props.with_headers(t);
        }
        let confirm = self
            .channel
            .basic_publish(
                ShortString::from(msg.exchange.as_str()),
                ShortString::from(msg.routing_key.as_str()),
                BasicPublishOptions {
                    mandatory: true,
                    ..BasicPublishOptions::default()
                },
                &msg.body,
                props,
            )
            .await?
            .await?;
        match confirm {
            Confirmation::Ack(None) => Ok(Published::Confirmed),
            Confirmation::Ack(Some(_)) | Confirmation::Nack(Some(_)) => Ok(Published::Unroutable),
            Confirmation::Nack(None) => Err(InfraError::Broker(format!(
                "broker refused (nack) a message to {}/{}",
                msg.exchange, msg.routing_key
            ))),
            Confirmation::NotRequested => Err(InfraError::Broker(
                "publisher confirms are not enabled".into(),
            )),
        }
    }

    /// Publishes and requires routing to at least one queue.
    pub async fn publish_routed(&self, msg: &Outgoing) -> Result<(), InfraError> {
        match self.publish(msg).await? {
            Published::Confirmed => Ok(()),
            Published::Unroutable => Err(InfraError::Broker(format!(
                "message to {}/{} was unroutable (topology missing?)",
                msg.exchange, msg.routing_key
            ))),
        }
    }
}
