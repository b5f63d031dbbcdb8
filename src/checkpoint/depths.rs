//! Rows still to send, per conversation: the shape `plan` models (kept apart from the send
//! queue's queries, which it only reads).

use super::{Checkpoint, Result, SqliteResultExt};

/// One conversation and how many of its rows are still to send (`pending` or `sending`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConversationDepth {
    pub conversation_id: String,
    pub rows: u64,
}

impl Checkpoint {
    /// Every conversation with rows `pending` or `sending`, with how many, in no particular
    /// order. Held rows (pending behind a failed one) count: they are still to send.
    pub fn depths_to_send(&self) -> Result<Vec<ConversationDepth>> {
        // Rows of a source ticket not yet resolved count under the ticket's key: they become
        // one conversation.
        let sql = if self.schema >= 6 {
            "SELECT IFNULL(conversation_id, 'ticket:' || ticket_key) AS id, COUNT(*) FROM row
             WHERE state IN ('pending', 'sending')
               AND (conversation_id IS NOT NULL OR ticket_key IS NOT NULL)
             GROUP BY id"
        } else {
            "SELECT conversation_id, COUNT(*) FROM row
             WHERE state IN ('pending', 'sending') AND conversation_id IS NOT NULL
             GROUP BY conversation_id"
        };
        let mut stmt = self.conn.prepare_cached(sql).at(&self.path)?;
        let depths = stmt
            .query_map([], |row| {
                Ok(ConversationDepth {
                    conversation_id: row.get(0)?,
                    rows: row.get(1)?,
                })
            })
            .at(&self.path)?
            .collect::<rusqlite::Result<Vec<_>>>()
            .at(&self.path)?;
        Ok(depths)
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::{checkpoint_with_job, stage, valid};

    #[test]
    fn depths_count_only_rows_still_to_send() {
        let (_dir, mut cp) = checkpoint_with_job();
        stage(
            &mut cp,
            vec![
                valid(1, "0123456789abcdef01234567", "a", 1),
                valid(2, "0123456789abcdef01234567", "b", 2),
                valid(3, "0123456789abcdef0123abcd", "c", 3),
            ],
        );
        let mut depths = cp.depths_to_send().expect("depths");
        depths.sort_by(|a, b| a.conversation_id.cmp(&b.conversation_id));
        let rows: Vec<u64> = depths.iter().map(|depth| depth.rows).collect();
        assert_eq!(rows, [2, 1]);
        cp.conn
            .execute("UPDATE row SET state = 'succeeded' WHERE line = 1", [])
            .expect("update");
        cp.conn
            .execute("UPDATE row SET state = 'sending' WHERE line = 2", [])
            .expect("update");
        cp.conn
            .execute("UPDATE row SET state = 'failed' WHERE line = 3", [])
            .expect("update");
        let depths = cp.depths_to_send().expect("depths");
        assert_eq!(depths.len(), 1);
        assert_eq!(depths[0].rows, 1);
    }
}
