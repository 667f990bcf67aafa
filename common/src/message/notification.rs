//! oslo notifications (`messagingv2` driver): the body snapq publishes for `snapq.snapshot.*`.

use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;
use serde_json::Value;
use uuid::Uuid;

use super::context::RequestContext;
use super::envelope;

/// A notification body in the v2.0 envelope (`notify/notifier.py`): `{"message_id" (uuid4,
/// hyphenated), "publisher_id", "event_type", "priority", "payload", "timestamp"
/// ("YYYY-MM-DD HH:MM:SS.ffffff", UTC), "_unique_id"}`.
///
/// `priority` is upper-cased as oslo sends it (`INFO`, `ERROR`, ...); publish it with routing key
/// `<topic>.<priority in lower case>`, e.g. `notifications.info`.
///
/// The request's context goes along as `_context_<key>` entries, as oslo's `pack_context`
/// adds them, without its secret keys (`auth_token` and the like never leave).
pub fn encode_notification(
    publisher_id: &str,
    event_type: &str,
    priority: &str,
    payload: Value,
    context: &RequestContext,
) -> Vec<u8> {
    encode_notification_at(
        SystemTime::now(),
        publisher_id,
        event_type,
        priority,
        payload,
        context,
    )
}

fn encode_notification_at(
    now: SystemTime,
    publisher_id: &str,
    event_type: &str,
    priority: &str,
    payload: Value,
    context: &RequestContext,
) -> Vec<u8> {
    #[derive(Serialize)]
    struct WireNotification<'a> {
        message_id: String,
        publisher_id: &'a str,
        event_type: &'a str,
        priority: String,
        payload: Value,
        timestamp: String,
        #[serde(rename = "_unique_id")]
        unique_id: String,
        #[serde(flatten)]
        context: serde_json::Map<String, Value>,
    }

    let context = context
        .without_secrets()
        .iter()
        .map(|(key, value)| (format!("_context_{key}"), value.clone()))
        .collect();
    envelope::encode(&WireNotification {
        message_id: Uuid::new_v4().hyphenated().to_string(),
        publisher_id,
        event_type,
        priority: priority.to_ascii_uppercase(),
        payload,
        timestamp: format_timestamp(now),
        unique_id: envelope::new_unique_id(),
        context,
    })
}

/// `time` in UTC as Python's `str(datetime)` writes it, always with microseconds:
/// `2026-11-26 11:40:48.926070`. Times before 1970 are written as the epoch.
fn format_timestamp(time: SystemTime) -> String {
    let since_epoch = time.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since_epoch.as_secs();
    let (year, month, day) = civil_from_days(secs / 86_400);
    let secs_of_day = secs % 86_400;
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02}.{:06}",
        secs_of_day / 3_600,
        secs_of_day % 3_600 / 60,
        secs_of_day % 60,
        since_epoch.subsec_micros()
    )
}

/// Proleptic Gregorian (year, month, day) of a count of days since 1970-01-01, after Howard
/// Hinnant's `civil_from_days` (restricted to days on or after the epoch).
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    // Shift the epoch to 0000-03-01 so that leap days fall at the end of each year.
    let z = days + 719_468;
    let era = z / 146_097;
    let day_of_era = z % 146_097;
    let year_of_era =
        (day_of_era - day_of_era / 1_460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_from_march = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_from_march + 2) / 5 + 1;
    let month = if month_from_march < 10 {
        month_from_march + 3
    } else {
        month_from_march - 9
    };
    let year = year_of_era + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use serde_json::json;

    use super::*;

    /// The notification captured from oslo.messaging 18.3.1 (oslo-wire-vectors.md).
    const OSLO_NOTIFICATION: &str = r#"{"oslo.version": "2.0", "oslo.message": "{\"message_id\": \"09200e5b-55ee-4544-85e0-9b4846fb8539\", \"publisher_id\": \"snapq-worker:host1\", \"event_type\": \"snapq.snapshot.end\", \"priority\": \"INFO\", \"payload\": {\"image_id\": \"abc\", \"method\": \"direct\"}, \"timestamp\": \"2026-11-26 11:40:48.926070\", \"_unique_id\": \"dc53e5653c834470a8b46b9d2e63a4e0\"}"}"#;

    fn at(secs: u64, micros: u32) -> SystemTime {
        UNIX_EPOCH + Duration::new(secs, micros * 1_000)
    }

    #[test]
    fn timestamp_is_utc_with_microseconds() {
        for (time, expected) in [
            (at(0, 0), "1970-01-01 00:00:00.000000"),
            (at(951_782_400, 1), "2000-02-29 00:00:00.000001"),
            (at(951_868_799, 999_999), "2000-02-29 23:59:59.999999"),
            (at(1_700_000_000, 123_456), "2023-11-14 22:13:20.123456"),
            (at(1_795_693_248, 926_070), "2026-11-26 11:40:48.926070"),
            (at(4_107_542_400, 0), "2100-03-01 00:00:00.000000"),
            (at(253_402_300_799, 0), "9999-12-31 23:59:59.000000"),
            (
                UNIX_EPOCH - Duration::from_secs(5),
                "1970-01-01 00:00:00.000000",
            ),
        ] {
            assert_eq!(format_timestamp(time), expected);
        }
    }

    #[test]
    fn civil_from_days_matches_day_by_day_walk() {
        // Leap years: divisible by 4 but not by 100, or by 400.
        let is_leap = |y: u64| matches!((y % 4, y % 100, y % 400), (0, 1.., _) | (_, _, 0));
        let days_in_month = |y: u64, m: u64| match m {
            2 if is_leap(y) => 29,
            2 => 28,
            4 | 6 | 9 | 11 => 30,
            _ => 31,
        };
        let (mut y, mut m, mut d) = (1970, 1, 1);
        for days in 0..200_000 {
            assert_eq!(civil_from_days(days), (y, m, d), "day {days}");
            d += 1;
            if d > days_in_month(y, m) {
                d = 1;
                m += 1;
                if m > 12 {
                    m = 1;
                    y += 1;
                }
            }
        }
    }

    #[test]
    fn notification_has_the_shape_oslo_sends() {
        let payload = json!({"image_id": "abc", "method": "direct"});
        let body = encode_notification_at(
            at(1_795_693_248, 926_070),
            "snapq-worker:host1",
            "snapq.snapshot.end",
            "info",
            payload.clone(),
            &RequestContext::default(),
        );
        let ours = envelope::decode(&body).unwrap();
        let oslo = envelope::decode(OSLO_NOTIFICATION.as_bytes()).unwrap();
        assert_eq!(
            ours.keys().collect::<Vec<_>>(),
            oslo.keys().collect::<Vec<_>>()
        );
        for key in [
            "publisher_id",
            "event_type",
            "priority",
            "payload",
            "timestamp",
        ] {
            assert_eq!(ours[key], oslo[key], "{key}");
        }
        let message_id = ours["message_id"].as_str().unwrap();
        assert_eq!(message_id.len(), 36);
        assert_eq!(Uuid::parse_str(message_id).unwrap().get_version_num(), 4);
        assert!(envelope::unique_id(&ours).is_ok());
    }

    #[test]
    fn notification_timestamp_is_now() {
        let body = encode_notification("p", "e", "ERROR", json!({}), &RequestContext::default());
        let inner = envelope::decode(&body).unwrap();
        let timestamp = inner["timestamp"].as_str().unwrap();
        let pattern: Vec<bool> = timestamp.chars().map(|c| c.is_ascii_digit()).collect();
        assert_eq!(timestamp.len(), 26, "{timestamp}");
        assert_eq!(&timestamp[4..5], "-");
        assert_eq!(&timestamp[10..11], " ");
        assert_eq!(&timestamp[19..20], ".");
        assert_eq!(
            pattern.iter().filter(|digit| **digit).count(),
            20,
            "{timestamp}"
        );
        assert!(timestamp >= "2025", "{timestamp}");
        assert_eq!(inner["priority"], "ERROR");
    }

    #[test]
    fn the_request_context_goes_along_without_its_secrets() {
        let mut context = RequestContext::default();
        context.insert("request_id", json!("req-1"));
        context.insert("project_id", json!("p1"));
        context.insert("auth_token", json!("tok-secret"));
        let body = encode_notification("p", "snapq.snapshot.start", "info", json!({}), &context);
        let inner = envelope::decode(&body).unwrap();
        assert_eq!(inner["_context_request_id"], "req-1");
        assert_eq!(inner["_context_project_id"], "p1");
        assert!(!String::from_utf8_lossy(&body).contains("tok-secret"));
    }
}
