//! SMS and WhatsApp through a Twilio-compatible Messages API.
//!
//! In: an [`Outbound`] SMS or WhatsApp message and the tenant's
//! [`TwilioAccount`]. [`TwilioTransport::send`] POSTs it, form-encoded with
//! HTTP basic auth, to `{api_base}/2010-04-01/Accounts/{sid}/Messages.json`
//! (<https://www.twilio.com/docs/messaging/api/message-resource#create-a-message-resource>),
//! with a `StatusCallback` under the service's public URL when one is
//! configured. Out: a [`Receipt`] whose `provider_id` is the message SID
//! (`SM…`) the status callbacks name, or a [`DispatchError`]:
//!
//! | failure                                                 | class     |
//! |---------------------------------------------------------|-----------|
//! | no phone number, bad account SID, not SMS/WhatsApp      | permanent |
//! | 400 (e.g. Twilio error 21211, invalid `To`), 404        | permanent |
//! | 401 (bad credentials), 403                              | permanent |
//! | 429, 5xx, connection failure, timeout                   | transient |
//!
//! Errors carry Twilio's own `code` and `message` when the reply has them.
//! The API takes no idempotency key: a timeout after Twilio accepted the
//! request is retried and may send the message twice.
//!
//! [`signature`] and [`verify_signature`] implement Twilio's request
//! validation, for the status callbacks it sends back.

use base64::Engine as _;
use hmac::{Hmac, Mac as _};
use serde::{Deserialize, Serialize};
use tidings_sdk::types::Channel;

use super::http::{HttpClient, HttpReply, classify_status};
use super::{DispatchError, Outbound, Receipt};

/// Twilio's API.
pub const API_BASE: &str = "https://api.twilio.com";

/// A tenant's account with the SMS / WhatsApp provider.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TwilioAccount {
    /// Account SID (`AC…`): the basic-auth user and part of the API path.
    pub account_sid: String,
    /// Auth token: the basic-auth password, and the key of the status
    /// callbacks' `X-Twilio-Signature`.
    pub auth_token: String,
    /// Sender: an E.164 number (`+15005550006`) or a messaging service SID
    /// (`MG…`). For WhatsApp the `whatsapp:` prefix is added when missing.
    pub from: String,
}

/// Sends SMS and WhatsApp messages through the Messages API.
#[derive(Debug, Clone)]
pub struct TwilioTransport {
    client: HttpClient,
    api_base: String,
    status_callback_base: Option<String>,
}

impl TwilioTransport {
    /// A transport for the API at `api_base` (normally [`API_BASE`]; it is
    /// operator configuration, so it is not guarded against private
    /// addresses). `status_callback_base` is the service's public base URL
    /// (`https://tidings.example.com`); when set, every message asks for
    /// status callbacks at [`callback_url`].
    pub fn new(client: HttpClient, api_base: String, status_callback_base: Option<String>) -> Self {
        Self {
            client,
            api_base: api_base.trim_end_matches('/').to_owned(),
            status_callback_base: status_callback_base
                .map(|base| base.trim_end_matches('/').to_owned()),
        }
    }

    /// Send `message` from `account`.
    pub async fn send(
        &self,
        account: &TwilioAccount,
        message: &Outbound<'_>,
    ) -> Result<Receipt, DispatchError> {
        let sid = &account.account_sid;
        if sid.is_empty()
            || !sid
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err(DispatchError::permanent(
                "the Twilio account SID must be letters and digits (AC…)",
            ));
        }
        let callback = self
            .status_callback_base
            .as_deref()
            .map(|base| callback_url(base, message.tenant_id));
        let fields = form_fields(account, message, callback.as_deref())?;
        let url = format!("{}/2010-04-01/Accounts/{sid}/Messages.json", self.api_base);
        let credentials = base64::engine::general_purpose::STANDARD
            .encode(format!("{sid}:{}", account.auth_token));
        let reply = self
            .client
            .post(
                &url,
                false,
                "application/x-www-form-urlencoded",
                vec![
                    ("authorization".to_owned(), format!("Basic {credentials}")),
                    ("accept".to_owned(), "application/json".to_owned()),
                ],
                form_encode(&fields).into_bytes(),
            )
            .await?;
        receipt(sid, &reply)
    }
}

/// Where Twilio reports the status of `tenant_id`'s messages:
/// `{base}/v1/callbacks/twilio/{tenant_id}`. The callback handler needs this
/// exact URL to check the `X-Twilio-Signature`.
pub fn callback_url(base: &str, tenant_id: &str) -> String {
    format!(
        "{}/v1/callbacks/twilio/{tenant_id}",
        base.trim_end_matches('/')
    )
}

/// The form fields of the create-message request.
fn form_fields(
    account: &TwilioAccount,
    message: &Outbound<'_>,
    status_callback: Option<&str>,
) -> Result<Vec<(&'static str, String)>, DispatchError> {
    let prefix = match message.channel {
        Channel::Sms => "",
        Channel::Whatsapp => "whatsapp:",
        other => {
            return Err(DispatchError::permanent(format!(
                "the Twilio transport sends SMS and WhatsApp only, not {other:?}"
            )));
        }
    };
    let address = |value: &str| match value.starts_with(prefix) {
        true => value.to_owned(),
        false => format!("{prefix}{value}"),
    };
    let to = message
        .to
        .filter(|to| !to.trim().is_empty())
        .ok_or_else(|| DispatchError::permanent("the customer has no phone number"))?;
    let from = account.from.trim();
    if from.is_empty() {
        return Err(DispatchError::permanent(
            "the Twilio account has no sender (`from`)",
        ));
    }
    let mut fields = vec![("To", address(to.trim()))];
    fields.push(match from.starts_with("MG") {
        true => ("MessagingServiceSid", from.to_owned()),
        false => ("From", address(from)),
    });
    fields.push(("Body", message.rendered.text.clone()));
    if let Some(callback) = status_callback {
        fields.push(("StatusCallback", callback.to_owned()));
    }
    Ok(fields)
}

/// The receipt for a 2xx reply, or the error for any other, with Twilio's
/// own error code and message when the reply has them.
fn receipt(account_sid: &str, reply: &HttpReply) -> Result<Receipt, DispatchError> {
    let json: Option<serde_json::Value> = serde_json::from_str(&reply.body).ok();
    let field = |name: &str| json.as_ref().and_then(|json| json.get(name));
    let code = field("code").and_then(|code| match code {
        serde_json::Value::Number(n) => Some(n.to_string()),
        serde_json::Value::String(s) => Some(s.clone()),
        _ => None,
    });
    let text = field("message").and_then(|m| m.as_str());
    let detail = match (code, text) {
        (Some(code), Some(text)) => format!("error {code}: {text}"),
        (Some(code), None) => format!("error {code}"),
        (None, Some(text)) => text.to_owned(),
        (None, None) => reply.body.clone(),
    };
    let detail = match field("more_info").and_then(|m| m.as_str()) {
        Some(link) => format!("{detail} ({link})"),
        None => detail,
    };
    classify_status(
        &format!("Twilio account {account_sid}"),
        &HttpReply {
            status: reply.status,
            body: detail,
        },
    )?;
    Ok(match field("sid").and_then(|sid| sid.as_str()) {
        Some(sid) => Receipt {
            transport_id: format!("twilio {sid}"),
            provider_id: Some(sid.to_owned()),
        },
        // Accepted all the same: failing here would send it again.
        None => {
            tracing::warn!(
                status = reply.status,
                "Twilio accepted a message without naming its SID"
            );
            Receipt {
                transport_id: format!("twilio HTTP {} (no SID in the reply)", reply.status),
                provider_id: None,
            }
        }
    })
}

/// `application/x-www-form-urlencoded` (the WHATWG URL standard's
/// serializer): unreserved bytes as is, space as `+`, the rest `%XX`.
fn form_encode(fields: &[(&str, String)]) -> String {
    let encode = |value: &str| {
        let mut out = String::with_capacity(value.len());
        for &b in value.as_bytes() {
            match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'*' | b'-' | b'.' | b'_' => {
                    out.push(char::from(b));
                }
                b' ' => out.push('+'),
                _ => out.push_str(&format!("%{b:02X}")),
            }
        }
        out
    };
    fields
        .iter()
        .map(|(name, value)| format!("{}={}", encode(name), encode(value)))
        .collect::<Vec<_>>()
        .join("&")
}

type HmacSha1 = Hmac<sha1::Sha1>;

fn signing_mac(auth_token: &str, url: &str, params: &[(String, String)]) -> HmacSha1 {
    // As Twilio's helper libraries do: sorted by name then value, each
    // distinct pair once.
    let mut sorted: Vec<&(String, String)> = params.iter().collect();
    sorted.sort();
    sorted.dedup();
    let mut mac =
        HmacSha1::new_from_slice(auth_token.as_bytes()).expect("HMAC takes keys of any length");
    mac.update(url.as_bytes());
    for (name, value) in sorted {
        mac.update(name.as_bytes());
        mac.update(value.as_bytes());
    }
    mac
}

/// Twilio's `X-Twilio-Signature` for a POST to `url` (the full URL Twilio
/// called, query included) with form `params`: base64 of HMAC-SHA1, keyed
/// with the auth token, over the URL followed by each parameter's name and
/// value, sorted by name
/// (<https://www.twilio.com/docs/usage/webhooks/webhooks-security>).
pub fn signature(auth_token: &str, url: &str, params: &[(String, String)]) -> String {
    base64::engine::general_purpose::STANDARD
        .encode(signing_mac(auth_token, url, params).finalize().into_bytes())
}

/// Whether `header_value` is the [`signature`] of this request; compared in
/// constant time.
pub fn verify_signature(
    auth_token: &str,
    url: &str,
    params: &[(String, String)],
    header_value: &str,
) -> bool {
    match base64::engine::general_purpose::STANDARD.decode(header_value.trim()) {
        Ok(expected) => signing_mac(auth_token, url, params)
            .verify_slice(&expected)
            .is_ok(),
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use tidings_sdk::types::Category;

    use super::*;
    use crate::render::Rendered;

    fn params(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    const DOCS_URL: &str = "https://mycompany.com/myapp.php?foo=1&bar=2";

    /// The example of Twilio's webhook security docs, also in the test
    /// suites of its helper libraries.
    fn docs_params() -> Vec<(String, String)> {
        params(&[
            ("CallSid", "CA1234567890ABCDE"),
            ("Caller", "+14158675309"),
            ("Digits", "1234"),
            ("From", "+14158675309"),
            ("To", "+18005551212"),
        ])
    }

    #[test]
    fn signature_matches_twilios_documented_example() {
        assert_eq!(
            signature("12345", DOCS_URL, &docs_params()),
            "RSOYDt4T1cUTdK1PDd93/VVr8B8="
        );
        let mut shuffled = docs_params();
        shuffled.reverse();
        assert_eq!(
            signature("12345", DOCS_URL, &shuffled),
            "RSOYDt4T1cUTdK1PDd93/VVr8B8="
        );
    }

    #[test]
    fn repeated_parameters_are_signed_sorted_and_once_like_twilios_libraries() {
        // twilio-python's test vector for repeated parameters.
        let repeated = params(&[
            ("Sid", "CA123"),
            ("SidAccount", "AC123"),
            ("Digits", "5678"),
            ("Digits", "1234"),
            ("Digits", "1234"),
        ]);
        assert_eq!(
            signature("12345", DOCS_URL, &repeated),
            "IK+Dwps556ElfBT0I3Rgjkr1wJU="
        );
    }

    #[test]
    fn verification_accepts_the_signature_and_refuses_any_change() {
        let good = "RSOYDt4T1cUTdK1PDd93/VVr8B8=";
        assert!(verify_signature("12345", DOCS_URL, &docs_params(), good));
        assert!(verify_signature(
            "12345",
            DOCS_URL,
            &docs_params(),
            &format!(" {good}\n")
        ));
        assert!(!verify_signature("12346", DOCS_URL, &docs_params(), good));
        assert!(!verify_signature(
            "12345",
            &format!("{DOCS_URL}&x=1"),
            &docs_params(),
            good
        ));
        let mut tampered = docs_params();
        tampered[2].1 = "9999".into();
        assert!(!verify_signature("12345", DOCS_URL, &tampered, good));
        assert!(!verify_signature("12345", DOCS_URL, &docs_params(), ""));
        assert!(!verify_signature(
            "12345",
            DOCS_URL,
            &docs_params(),
            "not base64!"
        ));
        assert!(!verify_signature(
            "12345",
            DOCS_URL,
            &docs_params(),
            "RSOYDt4T"
        ));
    }

    fn rendered() -> Rendered {
        Rendered {
            template: "order-shipped".into(),
            channel: Channel::Sms,
            locale: "en".into(),
            subject: None,
            text: "Ciao Ada & co: 100% shipped!".into(),
            html: None,
        }
    }

    fn outbound<'a>(channel: Channel, to: Option<&'a str>, rendered: &'a Rendered) -> Outbound<'a> {
        Outbound {
            id: "msg_1",
            tenant_id: "t_shop",
            channel,
            to,
            customer_id: "c_ada",
            from: "",
            reply_to: "",
            category: Category::Transactional,
            rendered,
            dkim: None,
            twilio: None,
            endpoint: None,
        }
    }

    fn account(from: &str) -> TwilioAccount {
        TwilioAccount {
            account_sid: "AC123".into(),
            auth_token: "token".into(),
            from: from.into(),
        }
    }

    #[test]
    fn whatsapp_numbers_get_one_prefix_and_messaging_services_none() {
        let content = rendered();
        let fields = form_fields(
            &account("+15005550006"),
            &outbound(Channel::Whatsapp, Some("+393331234567"), &content),
            Some("https://t.example/v1/callbacks/twilio/t_shop"),
        )
        .expect("fields");
        assert_eq!(
            fields,
            vec![
                ("To", "whatsapp:+393331234567".to_owned()),
                ("From", "whatsapp:+15005550006".to_owned()),
                ("Body", content.text.clone()),
                (
                    "StatusCallback",
                    "https://t.example/v1/callbacks/twilio/t_shop".to_owned()
                ),
            ]
        );
        let fields = form_fields(
            &account("whatsapp:+15005550006"),
            &outbound(Channel::Whatsapp, Some("whatsapp:+393331234567"), &content),
            None,
        )
        .expect("fields");
        assert_eq!(fields[0].1, "whatsapp:+393331234567");
        assert_eq!(fields[1].1, "whatsapp:+15005550006");
        let fields = form_fields(
            &account("MG0123456789abcdef"),
            &outbound(Channel::Sms, Some("+393331234567"), &content),
            None,
        )
        .expect("fields");
        assert_eq!(fields[0], ("To", "+393331234567".to_owned()));
        assert_eq!(
            fields[1],
            ("MessagingServiceSid", "MG0123456789abcdef".to_owned())
        );
        assert_eq!(fields.len(), 3);
    }

    #[test]
    fn a_message_without_a_phone_number_or_of_another_channel_is_refused_for_good() {
        let content = rendered();
        for message in [
            outbound(Channel::Sms, None, &content),
            outbound(Channel::Sms, Some(" "), &content),
            outbound(Channel::Email, Some("+393331234567"), &content),
        ] {
            let error = form_fields(&account("+15005550006"), &message, None).expect_err("refused");
            assert!(!error.is_transient(), "{error}");
        }
    }

    #[test]
    fn form_encoding_escapes_plus_ampersand_and_spaces() {
        let encoded = form_encode(&[
            ("To", "+393331234567".to_owned()),
            ("Body", "Ciao Ada & co: 100% è".to_owned()),
        ]);
        assert_eq!(
            encoded,
            "To=%2B393331234567&Body=Ciao+Ada+%26+co%3A+100%25+%C3%A8"
        );
    }

    fn reply(status: u16, body: &str) -> HttpReply {
        HttpReply {
            status,
            body: body.to_owned(),
        }
    }

    #[test]
    fn replies_become_receipts_or_errors_with_twilios_code() {
        let sent = receipt(
            "AC1",
            &reply(201, r#"{"sid": "SM0001", "status": "queued"}"#),
        )
        .expect("sent");
        assert_eq!(sent.transport_id, "twilio SM0001");
        assert_eq!(sent.provider_id.as_deref(), Some("SM0001"));

        let invalid = receipt(
            "AC1",
            &reply(
                400,
                r#"{"code": 21211, "message": "The 'To' number 123 is not a valid phone number.",
                    "more_info": "https://www.twilio.com/docs/errors/21211", "status": 400}"#,
            ),
        )
        .expect_err("refused");
        assert!(!invalid.is_transient());
        assert_eq!(
            invalid.to_string(),
            "Twilio account AC1: HTTP 400: error 21211: The 'To' number 123 is not a valid \
             phone number. (https://www.twilio.com/docs/errors/21211)"
        );
        let auth = receipt(
            "AC1",
            &reply(401, r#"{"code": 20003, "message": "Authenticate"}"#),
        )
        .expect_err("refused");
        assert!(!auth.is_transient());
        assert!(auth.to_string().contains("20003"), "{auth}");
        let busy = receipt(
            "AC1",
            &reply(429, r#"{"code": 20429, "message": "Too Many Requests"}"#),
        )
        .expect_err("busy");
        assert!(busy.is_transient());
        let down =
            receipt("AC1", &reply(503, "<html>Service Unavailable</html>")).expect_err("down");
        assert!(down.is_transient());
        assert!(down.to_string().contains("Service Unavailable"), "{down}");

        let no_sid = receipt("AC1", &reply(201, "{}")).expect("accepted");
        assert_eq!(no_sid.provider_id, None);
    }

    #[test]
    fn callback_urls_are_under_the_public_base() {
        assert_eq!(
            callback_url("https://tidings.example.com/", "t_shop"),
            "https://tidings.example.com/v1/callbacks/twilio/t_shop"
        );
    }
}
