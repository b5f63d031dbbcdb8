//! The resolve phase's records: one per customer and per source ticket named by the input, filled
//! from the staged rows, and every step of finding or creating them, written durably before and
//! after each request (a create is `sending` before it leaves, so a killed run looks it up before
//! any resend). Used by `crate::resolve`, and by `status` and `report` for their counts.

use rusqlite::{params, OptionalExtension, TransactionBehavior};

use super::{now_ms, Checkpoint, Result, SqliteResultExt};
use crate::row::{CustomerRef, TicketRef};

/// How a customer or conversation was resolved, as stored in `resolved_by`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ResolvedBy {
    FoundByExternalId,
    FoundByEmail,
    Created,
}

impl ResolvedBy {
    pub fn as_str(self) -> &'static str {
        match self {
            ResolvedBy::FoundByExternalId => "found_by_external_id",
            ResolvedBy::FoundByEmail => "found_by_email",
            ResolvedBy::Created => "created",
        }
    }
}

/// Where one customer or conversation stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntityState {
    Pending,
    /// A create may have been sent: look it up before anything else.
    Sending,
    Resolved,
    Failed,
}

impl EntityState {
    fn parse(text: &str) -> Option<EntityState> {
        match text {
            "pending" => Some(EntityState::Pending),
            "sending" => Some(EntityState::Sending),
            "resolved" => Some(EntityState::Resolved),
            "failed" => Some(EntityState::Failed),
            _ => None,
        }
    }
}

/// Which table a step is recorded in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Entity {
    Customer,
    Conversation,
}

impl Entity {
    fn table(self) -> &'static str {
        match self {
            Entity::Customer => "customer",
            Entity::Conversation => "conversation",
        }
    }
}

/// A customer as recorded.
#[derive(Debug, Clone, PartialEq)]
pub struct CustomerRecord {
    pub key: String,
    pub customer: CustomerRef,
    pub kustomer_id: Option<String>,
    pub state: EntityState,
    pub last_attempt_ms: Option<i64>,
}

/// A ticket whose rows wait for their conversation.
#[derive(Debug, Clone, PartialEq)]
pub struct TicketRecord {
    pub key: String,
    pub customer_key: String,
    pub name: Option<String>,
    pub status: Option<String>,
    pub tags: Vec<String>,
    /// The earliest message's createdAt (or sentAt).
    pub created_at: Option<String>,
    pub kustomer_id: Option<String>,
    pub state: EntityState,
    pub last_attempt_ms: Option<i64>,
}

/// Customers and conversations by how they were resolved, for `status` and `report`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct ResolutionCounts {
    pub found_by_external_id: u64,
    pub found_by_email: u64,
    pub created: u64,
    pub failed: u64,
    /// Not resolved yet (pending or sending).
    pub waiting: u64,
}

impl ResolutionCounts {
    pub fn total(&self) -> u64 {
        self.found_by_external_id + self.found_by_email + self.created + self.failed + self.waiting
    }
}

/// What the resolve phase has left: see [`Checkpoint::resolution_work`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ResolutionWork {
    pub tickets: u64,
    pub customers: u64,
    /// Customers with both an externalId and an email: looked up twice before a create.
    pub customers_with_both_keys: u64,
}

/// Tickets whose rows disagree about the customer: every row of such a ticket is refused, and
/// its message names the lines that disagree.
const DISAGREEING_TICKETS_SQL: &str = "
    SELECT ticket_key FROM row
    WHERE ticket_key IS NOT NULL AND state = 'pending' AND conversation_id IS NULL
    GROUP BY ticket_key
    HAVING COUNT(DISTINCT IFNULL(json_extract(ticket_json, '$.customer.external_id'), '')
                 || char(31) || lower(IFNULL(json_extract(ticket_json, '$.customer.email'), ''))) > 1";

const FILL_CUSTOMERS_SQL: &str = "
    INSERT OR IGNORE INTO customer (source_key, external_id, email, name, phone)
    SELECT customer_key,
           json_extract(ticket_json, '$.customer.external_id'),
           json_extract(ticket_json, '$.customer.email'),
           json_extract(ticket_json, '$.customer.name'),
           json_extract(ticket_json, '$.customer.phone')
    FROM (SELECT customer_key, ticket_json,
                 ROW_NUMBER() OVER (PARTITION BY customer_key ORDER BY line) AS n
          FROM row
          WHERE customer_key IS NOT NULL AND state NOT IN ('invalid', 'duplicate'))
    WHERE n = 1";

const FILL_CONVERSATIONS_SQL: &str = "
    INSERT OR IGNORE INTO conversation
        (source_key, customer_key, name, status, tags_json, created_at)
    SELECT ticket_key, customer_key,
           json_extract(ticket_json, '$.name'),
           json_extract(ticket_json, '$.status'),
           IFNULL(json_extract(ticket_json, '$.tags'), '[]'),
           COALESCE(json_extract(body, '$.createdAt'), sent_at)
    FROM (SELECT ticket_key, customer_key, ticket_json, body, sent_at,
                 ROW_NUMBER() OVER (PARTITION BY ticket_key ORDER BY sent_at_micros, line) AS n
          FROM row
          WHERE ticket_key IS NOT NULL AND state NOT IN ('invalid', 'duplicate'))
    WHERE n = 1";

impl Checkpoint {
    /// After staging: refuses tickets whose rows disagree about their customer (returns how many
    /// rows), then records each customer and ticket the valid rows name (attributes from the
    /// earliest row). Safe to repeat.
    pub fn prepare_resolution(&mut self) -> Result<u64> {
        if self.schema < 6 {
            return Ok(0);
        }
        let path = self.path.clone();
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .at(&path)?;
        let disagreeing: Vec<String> = tx
            .prepare(DISAGREEING_TICKETS_SQL)
            .and_then(|mut stmt| {
                stmt.query_map([], |row| row.get(0))?
                    .collect::<rusqlite::Result<Vec<String>>>()
            })
            .at(&path)?;
        let mut refused = 0u64;
        for ticket in disagreeing {
            let rows: Vec<(u64, String)> = tx
                .prepare(
                    "SELECT line, ticket_json FROM row
                     WHERE ticket_key = ?1 AND state = 'pending' ORDER BY line",
                )
                .and_then(|mut stmt| {
                    stmt.query_map([&ticket], |row| Ok((row.get(0)?, row.get(1)?)))?
                        .collect::<rusqlite::Result<Vec<_>>>()
                })
                .at(&path)?;
            let parsed: Vec<(u64, CustomerRef)> = rows
                .iter()
                .filter_map(|(line, json)| {
                    serde_json::from_str::<TicketRef>(json)
                        .ok()
                        .map(|t| (*line, t.customer))
                })
                .collect();
            let Some((first_line, first)) = parsed.first().cloned() else {
                continue;
            };
            let other = parsed
                .iter()
                .find(|(_, customer)| customer.identity() != first.identity())
                .cloned()
                .unwrap_or((first_line, first.clone()));
            let message = crate::row::disagreement(&ticket, other.0, &other.1, first_line, &first);
            refused += tx
                .execute(
                    "UPDATE row SET state = 'invalid', error_code = 'customer_disagrees',
                                    error_message = ?2, finished_ms = ?3
                     WHERE ticket_key = ?1 AND state = 'pending'",
                    params![ticket, message, now_ms()],
                )
                .at(&path)? as u64;
        }
        tx.execute(FILL_CUSTOMERS_SQL, []).at(&path)?;
        tx.execute(FILL_CONVERSATIONS_SQL, []).at(&path)?;
        tx.commit().at(&path)?;
        Ok(refused)
    }

    /// Whether any staged row names a source ticket (the job needs the resolve phase and its
    /// roles).
    pub fn names_tickets(&self) -> Result<bool> {
        if self.schema < 6 {
            return Ok(false);
        }
        self.conn
            .query_row(
                "SELECT EXISTS (SELECT 1 FROM row WHERE ticket_key IS NOT NULL)",
                [],
                |row| row.get(0),
            )
            .at(&self.path)
    }

    /// Tickets not yet resolved that have rows waiting for them, in input order.
    pub fn tickets_to_resolve(&self) -> Result<Vec<TicketRecord>> {
        if self.schema < 6 {
            return Ok(Vec::new());
        }
        let mut stmt = self
            .conn
            .prepare(
                "SELECT c.source_key, c.customer_key, c.name, c.status, c.tags_json, c.created_at,
                        c.kustomer_id, c.state, c.last_attempt_ms, MIN(r.line) AS first_line
                 FROM conversation c JOIN row r ON r.ticket_key = c.source_key
                 WHERE c.state != 'resolved' AND r.state = 'pending' AND r.conversation_id IS NULL
                 GROUP BY c.source_key
                 ORDER BY first_line",
            )
            .at(&self.path)?;
        let mut rows = stmt.query([]).at(&self.path)?;
        let mut tickets = Vec::new();
        while let Some(row) = rows.next().at(&self.path)? {
            let state: String = row.get("state").at(&self.path)?;
            let tags: String = row.get("tags_json").at(&self.path)?;
            tickets.push(TicketRecord {
                key: row.get("source_key").at(&self.path)?,
                customer_key: row.get("customer_key").at(&self.path)?,
                name: row.get("name").at(&self.path)?,
                status: row.get("status").at(&self.path)?,
                tags: serde_json::from_str(&tags).unwrap_or_default(),
                created_at: row.get("created_at").at(&self.path)?,
                kustomer_id: row.get("kustomer_id").at(&self.path)?,
                state: self.parse_entity_state(&state)?,
                last_attempt_ms: row.get("last_attempt_ms").at(&self.path)?,
            });
        }
        Ok(tickets)
    }

    /// One customer's record.
    pub fn customer_record(&self, key: &str) -> Result<Option<CustomerRecord>> {
        let found = self
            .conn
            .query_row(
                "SELECT source_key, external_id, email, name, phone, kustomer_id, state,
                        last_attempt_ms
                 FROM customer WHERE source_key = ?1",
                [key],
                |row| {
                    Ok((
                        CustomerRecord {
                            key: row.get("source_key")?,
                            customer: CustomerRef {
                                external_id: row.get("external_id")?,
                                email: row.get("email")?,
                                name: row.get("name")?,
                                phone: row.get("phone")?,
                            },
                            kustomer_id: row.get("kustomer_id")?,
                            state: EntityState::Pending,
                            last_attempt_ms: row.get("last_attempt_ms")?,
                        },
                        row.get::<_, String>("state")?,
                    ))
                },
            )
            .optional()
            .at(&self.path)?;
        found
            .map(|(record, state)| {
                Ok(CustomerRecord {
                    state: self.parse_entity_state(&state)?,
                    ..record
                })
            })
            .transpose()
    }

    /// A resolved customer or conversation to prove a lookup route on: (source key, Kustomer
    /// id), externalId-keyed customers only for `Customer`.
    pub fn known_resolved(
        &self,
        entity: Entity,
        by_email: bool,
    ) -> Result<Option<(String, String)>> {
        let sql = match (entity, by_email) {
            (Entity::Customer, false) => {
                "SELECT external_id, kustomer_id FROM customer
                 WHERE state = 'resolved' AND external_id IS NOT NULL LIMIT 1"
            }
            (Entity::Customer, true) => {
                "SELECT email, kustomer_id FROM customer
                 WHERE state = 'resolved' AND email IS NOT NULL LIMIT 1"
            }
            (Entity::Conversation, _) => {
                "SELECT source_key, kustomer_id FROM conversation
                 WHERE state = 'resolved' LIMIT 1"
            }
        };
        self.conn
            .query_row(sql, [], |row| Ok((row.get(0)?, row.get(1)?)))
            .optional()
            .at(&self.path)
    }

    /// Durably marks a create as about to be sent: from now on its outcome is unknown until an
    /// answer or a lookup settles it.
    pub fn entity_sending(&mut self, entity: Entity, key: &str) -> Result<()> {
        let now = now_ms();
        let sql = format!(
            "UPDATE {} SET state = 'sending', attempts = attempts + 1,
                 first_attempt_ms = IFNULL(first_attempt_ms, ?2), last_attempt_ms = ?2,
                 error_code = NULL, error_message = NULL
             WHERE source_key = ?1",
            entity.table()
        );
        self.conn.execute(&sql, params![key, now]).at(&self.path)?;
        Ok(())
    }

    /// Durably marks the creates of one bulk job as about to be sent, in one transaction: from
    /// now on each outcome is unknown until the job's results or a lookup settle it.
    pub fn entities_bulk_sending(
        &mut self,
        entity: Entity,
        batch: &str,
        keys: &[String],
    ) -> Result<()> {
        let sql = format!(
            "UPDATE {} SET state = 'sending', attempts = attempts + 1,
                 first_attempt_ms = IFNULL(first_attempt_ms, ?2), last_attempt_ms = ?2,
                 error_code = NULL, error_message = NULL, bulk_batch = ?3, bulk_job_id = NULL
             WHERE source_key = ?1",
            entity.table()
        );
        self.settle_entity(|tx, now| {
            let mut stmt = tx.prepare(&sql)?;
            for key in keys {
                stmt.execute(params![key, now, batch])?;
            }
            Ok(())
        })
    }

    /// Records the bulk job a batch went in, as soon as the API named it.
    pub fn entity_bulk_job(&mut self, entity: Entity, batch: &str, job_id: &str) -> Result<()> {
        let sql = format!(
            "UPDATE {} SET bulk_job_id = ?2 WHERE bulk_batch = ?1 AND state = 'sending'",
            entity.table()
        );
        self.conn
            .execute(&sql, params![batch, job_id])
            .at(&self.path)?;
        Ok(())
    }

    /// A bulk item the API refused before processing it (429): not stored, safe to send again.
    pub fn entity_refused(&mut self, entity: Entity, key: &str) -> Result<()> {
        let sql = format!(
            "UPDATE {} SET state = 'pending', bulk_batch = NULL, bulk_job_id = NULL
             WHERE source_key = ?1 AND state = 'sending'",
            entity.table()
        );
        self.conn.execute(&sql, [key]).at(&self.path)?;
        Ok(())
    }

    /// Records still `sending` in a known bulk job, by job (an earlier run's, read on resume).
    pub fn entities_in_bulk_jobs(&self, entity: Entity) -> Result<Vec<(String, Vec<String>)>> {
        if self.schema < 7 {
            return Ok(Vec::new());
        }
        let sql = format!(
            "SELECT bulk_job_id, source_key FROM {} WHERE state = 'sending'
               AND bulk_job_id IS NOT NULL ORDER BY bulk_job_id, source_key",
            entity.table()
        );
        let mut stmt = self.conn.prepare(&sql).at(&self.path)?;
        let mut rows = stmt.query([]).at(&self.path)?;
        let mut jobs: Vec<(String, Vec<String>)> = Vec::new();
        while let Some(row) = rows.next().at(&self.path)? {
            let job: String = row.get(0).at(&self.path)?;
            let key: String = row.get(1).at(&self.path)?;
            match jobs.last_mut() {
                Some((last, keys)) if *last == job => keys.push(key),
                _ => jobs.push((job, vec![key])),
            }
        }
        Ok(jobs)
    }

    /// Records a customer found or created. A conversation resolved gives its waiting rows their
    /// conversation id in the same transaction.
    pub fn entity_resolved(
        &mut self,
        entity: Entity,
        key: &str,
        kustomer_id: &str,
        how: ResolvedBy,
    ) -> Result<()> {
        let entity_sql = format!(
            "UPDATE {} SET state = 'resolved', kustomer_id = ?2, resolved_by = ?3,
                 error_code = NULL, error_message = NULL, retryable = 0, finished_ms = ?4
             WHERE source_key = ?1",
            entity.table()
        );
        self.settle_entity(|tx, now| {
            tx.execute(&entity_sql, params![key, kustomer_id, how.as_str(), now])?;
            if entity == Entity::Conversation {
                tx.execute(
                    "UPDATE row SET conversation_id = ?2
                     WHERE ticket_key = ?1 AND conversation_id IS NULL",
                    params![key, kustomer_id],
                )?;
            }
            Ok(())
        })
    }

    /// Records that a customer or conversation could not be resolved. A conversation's waiting
    /// rows fail with the same reason (`code`, e.g. `conversation_unresolved`).
    pub fn entity_failed(
        &mut self,
        entity: Entity,
        key: &str,
        code: &str,
        message: &str,
        retryable: bool,
    ) -> Result<()> {
        let entity_sql = format!(
            "UPDATE {} SET state = 'failed', resolved_by = 'failed', error_code = ?2,
                 error_message = ?3, retryable = ?4, finished_ms = ?5
             WHERE source_key = ?1",
            entity.table()
        );
        self.settle_entity(|tx, now| {
            tx.execute(&entity_sql, params![key, code, message, retryable, now])?;
            if entity == Entity::Conversation {
                tx.execute(
                    "UPDATE row SET state = 'failed', error_code = ?2, error_message = ?3,
                                    retryable = ?4, finished_ms = ?5
                     WHERE ticket_key = ?1 AND conversation_id IS NULL AND state = 'pending'",
                    params![key, code, message, retryable, now],
                )?;
            }
            Ok(())
        })
    }

    /// One durable transaction settling a customer or conversation (and its rows), with the
    /// job's last change.
    fn settle_entity(
        &mut self,
        writes: impl FnOnce(&rusqlite::Transaction<'_>, i64) -> rusqlite::Result<()>,
    ) -> Result<()> {
        let path = self.path.clone();
        let now = now_ms();
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .at(&path)?;
        writes(&tx, now).at(&path)?;
        tx.execute("UPDATE job SET updated_at_ms = ?1 WHERE id = 1", [now])
            .at(&path)?;
        tx.commit().at(&path)
    }

    /// Customers and conversations by how they were resolved (zero before schema 6).
    pub fn resolution_counts(&self) -> Result<(ResolutionCounts, ResolutionCounts)> {
        if self.schema < 6 {
            return Ok(Default::default());
        }
        let count = |table: &str| -> Result<ResolutionCounts> {
            let mut counts = ResolutionCounts::default();
            let sql = format!(
                "SELECT IFNULL(resolved_by, state), COUNT(*) FROM {table}
                 GROUP BY IFNULL(resolved_by, state)"
            );
            let mut stmt = self.conn.prepare(&sql).at(&self.path)?;
            let mut rows = stmt.query([]).at(&self.path)?;
            while let Some(row) = rows.next().at(&self.path)? {
                let how: String = row.get(0).at(&self.path)?;
                let n: u64 = row.get(1).at(&self.path)?;
                match how.as_str() {
                    "found_by_external_id" => counts.found_by_external_id += n,
                    "found_by_email" => counts.found_by_email += n,
                    "created" => counts.created += n,
                    "failed" => counts.failed += n,
                    _ => counts.waiting += n,
                }
            }
            Ok(counts)
        };
        Ok((count("customer")?, count("conversation")?))
    }

    /// What the resolve phase still has to do, for `plan`: tickets with waiting rows, and their
    /// customers not yet resolved (with how many lookups each may take).
    pub fn resolution_work(&self) -> Result<ResolutionWork> {
        if self.schema < 6 {
            return Ok(ResolutionWork::default());
        }
        self.conn
            .query_row(
                "WITH waiting AS (
                     SELECT DISTINCT c.source_key, c.customer_key FROM conversation c
                     JOIN row r ON r.ticket_key = c.source_key
                     WHERE c.state != 'resolved' AND r.state = 'pending'
                       AND r.conversation_id IS NULL)
                 SELECT (SELECT COUNT(*) FROM waiting),
                        COUNT(*),
                        IFNULL(SUM(external_id IS NOT NULL AND email IS NOT NULL), 0)
                 FROM customer
                 WHERE state != 'resolved'
                   AND source_key IN (SELECT customer_key FROM waiting)",
                [],
                |row| {
                    Ok(ResolutionWork {
                        tickets: row.get(0)?,
                        customers: row.get(1)?,
                        customers_with_both_keys: row.get(2)?,
                    })
                },
            )
            .at(&self.path)
    }

    fn parse_entity_state(&self, text: &str) -> Result<EntityState> {
        EntityState::parse(text)
            .ok_or_else(|| self.corrupt(format!("unknown resolve state {text:?}")))
    }

    /// Writes of the resolve phase must survive a power loss, like the send phase's.
    pub fn durable_against_power_loss(&self) -> Result<()> {
        self.conn
            .pragma_update(None, "synchronous", "FULL")
            .at(&self.path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checkpoint::test_support::*;
    use crate::checkpoint::{StagedKind, StagedRow};
    use crate::row::ValidRow;

    fn ticket_row(line: u64, ticket: &str, email: &str, micros: i64) -> StagedRow {
        StagedRow {
            line,
            byte_offset: line * 100,
            byte_len: 100,
            kind: StagedKind::Valid(ValidRow {
                conversation_id: None,
                ticket: Some(Box::new(TicketRef {
                    external_id: ticket.into(),
                    customer: CustomerRef {
                        external_id: None,
                        email: Some(email.into()),
                        name: Some(format!("name {line}")),
                        phone: None,
                    },
                    name: Some(format!("subject {line}")),
                    status: None,
                    tags: vec!["vip".into()],
                })),
                external_id: format!("m{line}"),
                sent_at: format!("2021-01-01T00:00:{line:02}.000Z"),
                sent_at_micros: micros,
                body: format!("{{\"externalId\":\"m{line}\"}}"),
            }),
        }
    }

    #[test]
    fn tickets_take_their_earliest_row_and_disagreeing_ones_are_refused() {
        let (_dir, mut cp) = checkpoint_with_job();
        stage(
            &mut cp,
            vec![
                ticket_row(2, "t1", "Ann@x.co", 50),
                ticket_row(3, "t1", "ann@X.co", 10),
                ticket_row(4, "t2", "bob@x.co", 5),
                ticket_row(5, "t2", "eve@x.co", 6),
                ticket_row(6, "t3", "ann@x.co", 7),
            ],
        );
        assert_eq!(cp.prepare_resolution().unwrap(), 2);
        assert_eq!(cp.prepare_resolution().unwrap(), 0, "repeatable");
        let tickets = cp.tickets_to_resolve().unwrap();
        let keys: Vec<&str> = tickets.iter().map(|t| t.key.as_str()).collect();
        assert_eq!(keys, ["t1", "t3"]);
        assert_eq!(
            tickets[0].name.as_deref(),
            Some("subject 3"),
            "earliest by sentAt"
        );
        assert_eq!(tickets[0].tags, ["vip"]);
        assert_eq!(tickets[0].customer_key, "email:ann@x.co");
        assert_eq!(tickets[1].customer_key, "email:ann@x.co");
        let customer = cp.customer_record("email:ann@x.co").unwrap().unwrap();
        assert_eq!(customer.customer.email.as_deref(), Some("Ann@x.co"));
        let message: String = cp
            .conn
            .query_row("SELECT error_message FROM row WHERE line = 5", [], |r| {
                r.get(0)
            })
            .unwrap();
        assert!(
            message.contains(
                "line 5 names customerEmail \"eve@x.co\", line 4 names customerEmail \"bob@x.co\""
            ),
            "{message}"
        );
    }

    #[test]
    fn resolving_gives_rows_their_conversation_and_failing_fails_them() {
        let (_dir, mut cp) = checkpoint_with_job();
        stage(
            &mut cp,
            vec![
                ticket_row(2, "t1", "a@x.co", 1),
                ticket_row(3, "t2", "a@x.co", 2),
            ],
        );
        cp.prepare_resolution().unwrap();
        cp.entity_sending(Entity::Customer, "email:a@x.co").unwrap();
        let record = cp.customer_record("email:a@x.co").unwrap().unwrap();
        assert_eq!(record.state, EntityState::Sending);
        assert!(record.last_attempt_ms.is_some());
        cp.entity_resolved(Entity::Customer, "email:a@x.co", "k1", ResolvedBy::Created)
            .unwrap();
        cp.entity_resolved(Entity::Conversation, "t1", "c1", ResolvedBy::Created)
            .unwrap();
        cp.entity_failed(
            Entity::Conversation,
            "t2",
            "conversation_unresolved",
            "why",
            true,
        )
        .unwrap();
        assert!(cp.tickets_to_resolve().unwrap().is_empty());
        let queue = cp.conversation_queue("c1").unwrap();
        assert_eq!(queue.len(), 1);
        let counts = cp.counts().unwrap();
        assert_eq!((counts.pending, counts.failed), (1, 1));
        let (customers, conversations) = cp.resolution_counts().unwrap();
        assert_eq!(customers.created, 1);
        assert_eq!((conversations.created, conversations.failed), (1, 1));
        assert_eq!(
            cp.known_resolved(Entity::Conversation, false).unwrap(),
            Some(("t1".into(), "c1".into()))
        );
    }

    #[test]
    fn a_bulk_batch_is_sending_at_once_then_read_by_its_job_and_a_refused_item_waits_again() {
        let (_dir, mut cp) = checkpoint_with_job();
        stage(
            &mut cp,
            vec![
                ticket_row(2, "t1", "a@x.co", 1),
                ticket_row(3, "t2", "b@x.co", 2),
                ticket_row(4, "t3", "c@x.co", 3),
            ],
        );
        cp.prepare_resolution().unwrap();
        let keys: Vec<String> = ["t1", "t2", "t3"].map(String::from).to_vec();
        cp.entities_bulk_sending(Entity::Conversation, "b1", &keys)
            .unwrap();
        assert!(cp
            .tickets_to_resolve()
            .unwrap()
            .iter()
            .all(|t| t.state == EntityState::Sending && t.last_attempt_ms.is_some()));
        assert!(
            cp.entities_in_bulk_jobs(Entity::Conversation)
                .unwrap()
                .is_empty(),
            "no job id yet: settled by lookup"
        );
        cp.entity_bulk_job(Entity::Conversation, "b1", "job-1")
            .unwrap();
        cp.entity_resolved(Entity::Conversation, "t1", "c1", ResolvedBy::Created)
            .unwrap();
        cp.entity_refused(Entity::Conversation, "t3").unwrap();
        assert_eq!(
            cp.entities_in_bulk_jobs(Entity::Conversation).unwrap(),
            vec![("job-1".to_string(), vec!["t2".to_string()])]
        );
        let states: Vec<EntityState> = cp
            .tickets_to_resolve()
            .unwrap()
            .iter()
            .map(|t| t.state)
            .collect();
        assert_eq!(states, [EntityState::Sending, EntityState::Pending]);
        assert!(cp
            .entities_in_bulk_jobs(Entity::Customer)
            .unwrap()
            .is_empty());
    }
}
