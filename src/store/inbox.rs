//! The intake inbox (migration 0017): requests stored as intake checked
//! them, to become runs later. Storing a batch is one narrow insert, much
//! cheaper than creating its runs, so a reader of a shared request queue
//! can keep up with a flood and nothing queued behind it waits for it.
//!
//! Rows are taken a few per tenant at a time ([`take`]), highest priority
//! first and in arrival order within a priority, and deleted by the
//! transaction that takes them: the caller creates their runs in the same
//! transaction, so a request becomes a run exactly once, or stays here.

use sqlx::{PgConnection, PgPool};

use super::{requests::NewRun, Error};

/// A request taken from the inbox.
#[derive(Debug, Clone)]
pub struct Spooled {
    /// Its row, in arrival order.
    pub id: i64,
    /// The request, as intake checked it; `Err` with the stored text when
    /// it no longer reads as a request (written by another version).
    pub new: Result<NewRun, String>,
}

/// Stores the requests whose thread is new or the tenant's, in one
/// statement; per request, whether it was stored (false: it names a thread
/// that is not its tenant's, and is refused like at intake).
pub async fn spool(pool: &PgPool, news: &[NewRun]) -> Result<Vec<bool>, Error> {
    let mut requests = Vec::with_capacity(news.len());
    for n in news {
        requests.push(serde_json::to_value(n).map_err(|e| Error::internal(e.to_string()))?);
    }
    let stored: Vec<i64> = sqlx::query_scalar(
        "WITH r AS (SELECT * FROM UNNEST($1::text[], $2::int2[], $3::jsonb[], $4::uuid[]) \
             WITH ORDINALITY AS t(tenant, priority, request, thread_id, idx)), \
         ok AS (SELECT * FROM r WHERE thread_id IS NULL OR EXISTS \
             (SELECT 1 FROM threads t WHERE t.id = r.thread_id AND t.tenant = r.tenant)), \
         stored AS (INSERT INTO intake_inbox (tenant, priority, request) \
             SELECT tenant, priority, request FROM ok ORDER BY idx) \
         SELECT idx FROM ok",
    )
    .bind(news.iter().map(|n| n.tenant.as_str()).collect::<Vec<_>>())
    .bind(news.iter().map(|n| n.priority).collect::<Vec<_>>())
    .bind(&requests)
    .bind(news.iter().map(|n| n.thread_id).collect::<Vec<_>>())
    .fetch_all(pool)
    .await?;
    let mut out = vec![false; news.len()];
    for idx in stored {
        if let Some(slot) = usize::try_from(idx - 1).ok().and_then(|i| out.get_mut(i)) {
            *slot = true;
        }
    }
    Ok(out)
}

/// Takes (deletes, within the caller's transaction) up to `per_tenant`
/// requests of every tenant with spooled requests, skipping rows another
/// transaction holds; by tenant, then priority (highest first), then
/// arrival.
pub async fn take(conn: &mut PgConnection, per_tenant: i64) -> Result<Vec<Spooled>, Error> {
    let rows: Vec<(i64, String, i16, serde_json::Value)> = sqlx::query_as(
        "WITH RECURSIVE spooled(tenant) AS ( \
           (SELECT tenant FROM intake_inbox ORDER BY tenant LIMIT 1) \
           UNION ALL \
           SELECT (SELECT i.tenant FROM intake_inbox i WHERE i.tenant > s.tenant \
                   ORDER BY i.tenant LIMIT 1) FROM spooled s WHERE s.tenant IS NOT NULL), \
         picked AS (SELECT p.id FROM spooled s CROSS JOIN LATERAL \
             (SELECT i.id FROM intake_inbox i WHERE i.tenant = s.tenant \
              ORDER BY i.priority DESC, i.id LIMIT $1 FOR UPDATE SKIP LOCKED) p \
             WHERE s.tenant IS NOT NULL) \
         DELETE FROM intake_inbox WHERE id IN (SELECT id FROM picked) \
         RETURNING id, tenant, priority, request",
    )
    .bind(per_tenant)
    .fetch_all(&mut *conn)
    .await?;
    Ok(read_rows(rows))
}

/// Takes (deletes, within the caller's transaction) the request in row
/// `id`, unless it is gone or another transaction holds it.
pub async fn take_one(conn: &mut PgConnection, id: i64) -> Result<Option<Spooled>, Error> {
    let rows: Vec<(i64, String, i16, serde_json::Value)> = sqlx::query_as(
        "DELETE FROM intake_inbox WHERE id = (SELECT id FROM intake_inbox WHERE id = $1 \
         FOR UPDATE SKIP LOCKED) RETURNING id, tenant, priority, request",
    )
    .bind(id)
    .fetch_all(&mut *conn)
    .await?;
    Ok(read_rows(rows).pop())
}

fn read_rows(mut rows: Vec<(i64, String, i16, serde_json::Value)>) -> Vec<Spooled> {
    rows.sort_by(|a, b| (&a.1, -a.2, a.0).cmp(&(&b.1, -b.2, b.0)));
    rows.into_iter()
        .map(|(id, _, _, request)| Spooled {
            id,
            new: serde_json::from_value(request.clone()).map_err(|_| request.to_string()),
        })
        .collect()
}

/// Spooled requests per tenant, by tenant name.
pub async fn depth(pool: &PgPool) -> Result<Vec<(String, i64)>, Error> {
    Ok(
        sqlx::query_as("SELECT tenant, count(*) FROM intake_inbox GROUP BY tenant ORDER BY tenant")
            .fetch_all(pool)
            .await?,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_come_by_tenant_then_priority_then_arrival_and_bad_rows_say_so() {
        let new = |tenant: &str, priority: i16| NewRun {
            tenant: tenant.into(),
            thread_id: None,
            correlation_id: "c".into(),
            request_message_id: None,
            reply_to: None,
            message: "m".into(),
            workload_id: None,
            context: serde_json::json!({}),
            priority,
            over_rate: false,
        };
        let row = |id: i64, n: NewRun| {
            let v = serde_json::to_value(&n).unwrap();
            (id, n.tenant, n.priority, v)
        };
        let rows = vec![
            row(4, new("b", 0)),
            row(3, new("a", 0)),
            row(2, new("a", 9)),
            row(1, new("a", 0)),
            (5, "a".into(), 0, serde_json::json!({"not": "a request"})),
        ];
        let got = read_rows(rows);
        let ids: Vec<i64> = got.iter().map(|s| s.id).collect();
        assert_eq!(ids, vec![2, 1, 3, 5, 4]);
        assert_eq!(got[0].new.as_ref().unwrap().priority, 9);
        assert!(got[3].new.as_ref().unwrap_err().contains("not"));
    }
}
