//! The mutations applied to a copy of the good store (one per name in `MUTATIONS`).

use super::*;

/// Applies mutation `name` to the copy at `path`; returns a description.
pub(super) fn mutate(rng: &mut fastrand::Rng, fx: &Fixture, name: &str, path: &Path) -> String {
    let mut bytes = std::fs::read(path).expect("read copy");
    let len = bytes.len();
    let ps = fx.page_size;
    let pages = len.div_ceil(ps);
    let byte_level = !matches!(name, "append_garbage" | "garbage_wal") && !name.contains('_')
        || matches!(
            name,
            "bit_flips"
                | "overwrite_bytes"
                | "user_version"
                | "zero_header"
                | "zero_page"
                | "swap_pages"
        );
    if byte_level && len < 100 {
        // A second mutation on a file an earlier one truncated to less than a header.
        return format!("{name} skipped ({len} bytes left)");
    }
    let desc = match name {
        "truncate" => {
            let at = match rng.u8(..3) {
                0 => rng.usize(..len),
                1 => rng.usize(..pages) * ps,
                _ => len - rng.usize(1..ps.min(len)),
            };
            bytes.truncate(at);
            format!("truncated to {at} of {len} bytes")
        }
        "bit_flips" => {
            flip_random_bits(rng, &mut bytes, ps);
            "bits flipped in 1-3 pages".into()
        }
        "overwrite_bytes" => {
            let start = rng.usize(..len);
            let n = rng.usize(1..=64).min(len - start);
            let fill = rng.u8(..3);
            for b in &mut bytes[start..start + n] {
                *b = match fill {
                    0 => 0,
                    1 => 0xff,
                    _ => rng.u8(..),
                };
            }
            format!("{n} bytes overwritten at {start}")
        }
        "user_version" => {
            let v: i32 = match rng.u8(..6) {
                0 => 0,
                1 => 1,
                2 => SCHEMA_VERSION as i32 + 1,
                3 => -1,
                4 => i32::MAX,
                _ => rng.i32(..),
            };
            bytes[60..64].copy_from_slice(&v.to_be_bytes());
            format!("user_version = {v}")
        }
        "zero_header" => {
            let n = *pick(rng, &[16usize, 100]);
            bytes[..n].fill(0);
            format!("first {n} bytes zeroed")
        }
        "zero_page" => {
            let p = rng.usize(..pages);
            let end = ((p + 1) * ps).min(len);
            bytes[p * ps..end].fill(0);
            format!("page {} zeroed", p + 1)
        }
        "swap_pages" => {
            let (a, b) = (rng.usize(..pages), rng.usize(..pages));
            if a != b && (a + 1) * ps <= len && (b + 1) * ps <= len {
                let pa = bytes[a * ps..(a + 1) * ps].to_vec();
                let pb = bytes[b * ps..(b + 1) * ps].to_vec();
                bytes[a * ps..(a + 1) * ps].copy_from_slice(&pb);
                bytes[b * ps..(b + 1) * ps].copy_from_slice(&pa);
            }
            format!("pages {} and {} swapped", a + 1, b + 1)
        }
        "append_garbage" => {
            let n = *pick(rng, &[1usize, 100, ps, 3 * ps + 7]);
            bytes.extend((0..n).map(|_| rng.u8(..)));
            format!("{n} garbage bytes appended")
        }
        "garbage_wal" => {
            let n = *pick(rng, &[32usize, 1000, 4096 + 24]);
            let mut wal: Vec<u8> = (0..n).map(|_| rng.u8(..)).collect();
            if rng.bool() && n >= 4 {
                wal[..4].copy_from_slice(&0x377f_0682u32.to_be_bytes()); // WAL magic
            }
            std::fs::write(path.with_file_name("tradebaas.db-wal"), wal).expect("wal");
            return format!("garbage -wal of {n} bytes");
        }
        // SQL mutations on the copy (then the file's bytes as they are).
        "edit_event_column" => {
            let seq = some_seq(rng, fx);
            let col = *pick(
                rng,
                &["payload", "hash", "prev_hash", "ts", "kind", "event_id"],
            );
            let row = &fx.events[seq as usize - 1];
            let old = match col {
                "payload" => &row.payload,
                "hash" => &row.hash,
                "prev_hash" => &row.prev_hash,
                "ts" => &row.ts,
                "kind" => &row.kind,
                _ => &row.event_id,
            };
            // One character changed (for a JSON payload, a digit or a letter: still JSON).
            let mut chars: Vec<char> = old.chars().collect();
            let i = rng
                .usize(..chars.len().max(1))
                .min(chars.len().saturating_sub(1));
            if let Some(c) = chars.get_mut(i) {
                *c = match *c {
                    '0'..='8' => ((*c as u8) + 1) as char,
                    '9' => '0',
                    'a'..='y' => ((*c as u8) + 1) as char,
                    _ => 'a',
                };
            }
            let new: String = chars.into_iter().collect();
            sql(path, |c| {
                c.execute(
                    &format!("UPDATE events SET {col} = ?1 WHERE seq = ?2"),
                    params![new, seq as i64],
                )
                .map(drop)
            });
            return format!("event {seq}: {col} edited");
        }
        "forge_one_event" => {
            // An edited payload with its own hash recomputed: only the next row's link breaks.
            let seq = some_seq(rng, fx);
            let row = &fx.events[seq as usize - 1];
            let payload = json!({ "forged": rng.u32(..) }).to_string();
            let hash = chain_hash(
                &row.prev_hash,
                row.seq,
                &row.event_id,
                &row.ts,
                &row.kind,
                &payload,
            );
            sql(path, |c| {
                c.execute(
                    "UPDATE events SET payload = ?1, hash = ?2 WHERE seq = ?3",
                    params![payload, hash, seq as i64],
                )
                .map(drop)
            });
            return format!("event {seq}: payload forged with its hash recomputed");
        }
        "delete_rows" => {
            let last = fx.events.len() as u64;
            let (a, b) = match rng.u8(..4) {
                0 => {
                    let s = some_seq(rng, fx);
                    (s, s)
                }
                1 => (last - rng.u64(0..5), last),
                2 => (1, rng.u64(1..10)),
                _ => {
                    let s = some_seq(rng, fx);
                    (s, (s + rng.u64(1..20)).min(last))
                }
            };
            sql(path, |c| {
                c.execute(
                    "DELETE FROM events WHERE seq BETWEEN ?1 AND ?2",
                    params![a as i64, b as i64],
                )
                .map(drop)
            });
            return format!("events {a}..={b} deleted");
        }
        "swap_rows" => {
            let (a, b) = (some_seq(rng, fx), some_seq(rng, fx));
            let whole = rng.bool();
            sql(path, |c| {
                let tx = c.unchecked_transaction()?;
                if whole {
                    // Every column but seq: the rows trade places.
                    tx.execute("UPDATE events SET seq = -1 WHERE seq = ?1", [a as i64])?;
                    tx.execute(
                        "UPDATE events SET seq = ?1 WHERE seq = ?2",
                        [a as i64, b as i64],
                    )?;
                    tx.execute("UPDATE events SET seq = ?1 WHERE seq = -1", [b as i64])?;
                } else {
                    tx.execute(
                        "UPDATE events SET payload = (SELECT payload FROM events WHERE seq = ?2) \
                         WHERE seq = ?1",
                        [a as i64, b as i64],
                    )?;
                }
                tx.commit()
            });
            return format!(
                "events {a} and {b} swapped ({})",
                if whole { "rows" } else { "payload" }
            );
        }
        "insert_row" => {
            let at = match rng.u8(..3) {
                0 => fx.events.len() as i64 + 1,
                1 => fx.events.len() as i64 + rng.i64(2..10),
                _ => -rng.i64(0..3),
            };
            let src = &fx.events[rng.usize(..fx.events.len())];
            let chained = rng.bool() && at == fx.events.len() as i64 + 1;
            let last = fx.events.last().expect("events");
            let (prev, ts) = if chained {
                (last.hash.clone(), last.ts.clone())
            } else {
                (src.prev_hash.clone(), src.ts.clone())
            };
            let id = format!("fuzz-{}", rng.u64(..));
            let hash = chain_hash(&prev, at as u64, &id, &ts, &src.kind, &src.payload);
            sql(path, |c| {
                c.execute(
                    "INSERT INTO events (seq, event_id, ts, kind, payload, prev_hash, hash) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                    params![at, id, ts, src.kind, src.payload, prev, hash],
                )
                .map(drop)
            });
            return format!(
                "row inserted at seq {at}{}",
                if chained { " (chain-correct)" } else { "" }
            );
        }
        "edit_checkpoint" => {
            let last = fx.events.len() as u64;
            let value = match rng.u8(..6) {
                0 => "not json".to_string(),
                1 => json!({ "seq": "x" }).to_string(),
                2 => json!({ "seq": last + 5, "hash": "00", "at": "now" }).to_string(),
                3 => {
                    let e = &fx.events[rng.usize(..fx.events.len())];
                    json!({ "seq": e.seq, "hash": fx.events[0].hash, "at": "now" }).to_string()
                }
                4 => json!({ "seq": 0, "hash": "", "at": "now" }).to_string(),
                _ => String::new(),
            };
            sql(path, |c| {
                if value.is_empty() {
                    c.execute("DELETE FROM state WHERE key = ?1", [CHECKPOINT_KEY])
                } else {
                    c.execute(
                        "UPDATE state SET value = ?1 WHERE key = ?2",
                        params![value, CHECKPOINT_KEY],
                    )
                }
                .map(drop)
            });
            return format!("checkpoint set to {value:?}");
        }
        "newer_schema" => {
            let v = SCHEMA_VERSION + rng.i64(1..3);
            sql(path, |c| {
                c.execute_batch(&format!(
                    "ALTER TABLE events ADD COLUMN sealed INTEGER; \
                     CREATE TABLE from_the_future (id INTEGER PRIMARY KEY, path TEXT); \
                     PRAGMA user_version = {v};"
                ))
            });
            return format!("newer schema {v}");
        }
        "drop_table" => {
            let t = *pick(rng, &["snapshots", "state", "events"]);
            let rename = rng.bool();
            sql(path, |c| {
                if rename {
                    c.execute_batch(&format!("ALTER TABLE {t} RENAME TO {t}_old"))
                } else {
                    c.execute_batch(&format!("DROP TABLE {t}"))
                }
            });
            return format!("table {t} {}", if rename { "renamed" } else { "dropped" });
        }
        "edit_state" => {
            let key = *pick(rng, &["capital", "mode", "run"]);
            let value = *pick(rng, &["{\"equity\":-1}", "\"LIVE\"", "not json", "{"]);
            sql(path, |c| {
                c.execute(
                    "UPDATE state SET value = ?1 WHERE key = ?2",
                    params![value, key],
                )
                .map(drop)
            });
            return format!("state {key} = {value}");
        }
        other => panic!("unknown mutation {other}"),
    };
    std::fs::write(path, &bytes).expect("write copy");
    desc
}
