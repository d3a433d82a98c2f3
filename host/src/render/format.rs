//! The `money`, `date`, `datetime` and `time` template filters, and the
//! formatting behind them.
//!
//! In: a money object `{minor, currency}`, or an integer minor amount plus a
//! currency code; an RFC 3339 timestamp (for `date` also a `YYYY-MM-DD` date),
//! shown in the customer's timezone; and the [`Lang`] of the template used.
//! Out: the text a customer reads. A filter fails — a minijinja error that
//! the render stage reports with the part and line — when given the wrong
//! kind of value: undefined or none, a non-integer amount, a missing or
//! malformed currency code, text that is not a timestamp. An unknown currency
//! is shown by its code with two decimals, an unknown timezone is UTC, and a
//! language without rules of its own (anything but en, it, fr, es, ro, cs)
//! is formatted as English.
//!
//! Choices (CLDR-like, simplified for messages that also go out as SMS):
//! - Only ASCII spaces: CLDR's no-break and narrow no-break spaces (fr, cs)
//!   are not in the GSM-7 alphabet and would force an SMS into UCS-2, halving
//!   its length.
//! - English puts `€ $ £ ¥` before the amount (`€1,234.50`) and any other
//!   currency's code after it (`1,234.50 CHF`). The other languages put the
//!   symbol or code after the amount: `1.234,50 €` (it, es, ro), `1 234,50 €`
//!   (fr), `1 234,50 Kč` (cs), `1.234,50 lei` (ro, RON).
//! - Decimals follow ISO 4217's minor unit (JPY 0, KWD 3, most 2; HUF 2).
//! - English times are 12-hour (`7:00 PM`, en-US style, matching the
//!   `November 26, 2026` date order); the other languages use 24 hours.

use jiff::Timestamp;
use jiff::civil::Date;
use jiff::tz::TimeZone;
use minijinja::value::{Rest, Value, ValueKind};
use minijinja::{Environment, ErrorKind};

/// A language with its own formatting rules; anything else formats as English.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Lang {
    En,
    It,
    Fr,
    Es,
    Ro,
    Cs,
}

impl Lang {
    /// The language of a locale such as `it-IT`; English when unsupported.
    pub(super) fn of_locale(locale: &str) -> Lang {
        let language = locale.split(['-', '_']).next().unwrap_or_default();
        match language.to_ascii_lowercase().as_str() {
            "it" => Lang::It,
            "fr" => Lang::Fr,
            "es" => Lang::Es,
            "ro" => Lang::Ro,
            "cs" => Lang::Cs,
            _ => Lang::En,
        }
    }

    fn group_separator(self) -> char {
        match self {
            Lang::En => ',',
            Lang::It | Lang::Es | Lang::Ro => '.',
            Lang::Fr | Lang::Cs => ' ',
        }
    }

    fn decimal_separator(self) -> char {
        match self {
            Lang::En => '.',
            _ => ',',
        }
    }

    fn months(self) -> &'static [&'static str; 12] {
        match self {
            Lang::En => &[
                "January",
                "February",
                "March",
                "April",
                "May",
                "June",
                "July",
                "August",
                "September",
                "October",
                "November",
                "December",
            ],
            Lang::It => &[
                "gennaio",
                "febbraio",
                "marzo",
                "aprile",
                "maggio",
                "giugno",
                "luglio",
                "agosto",
                "settembre",
                "ottobre",
                "novembre",
                "dicembre",
            ],
            Lang::Fr => &[
                "janvier",
                "février",
                "mars",
                "avril",
                "mai",
                "juin",
                "juillet",
                "août",
                "septembre",
                "octobre",
                "novembre",
                "décembre",
            ],
            Lang::Es => &[
                "enero",
                "febrero",
                "marzo",
                "abril",
                "mayo",
                "junio",
                "julio",
                "agosto",
                "septiembre",
                "octubre",
                "noviembre",
                "diciembre",
            ],
            Lang::Ro => &[
                "ianuarie",
                "februarie",
                "martie",
                "aprilie",
                "mai",
                "iunie",
                "iulie",
                "august",
                "septembrie",
                "octombrie",
                "noiembrie",
                "decembrie",
            ],
            // Czech dates use the genitive: "26. listopadu 2026".
            Lang::Cs => &[
                "ledna",
                "února",
                "března",
                "dubna",
                "května",
                "června",
                "července",
                "srpna",
                "září",
                "října",
                "listopadu",
                "prosince",
            ],
        }
    }
}

/// Digits after the decimal point for an ISO 4217 currency.
fn decimals(currency: &str) -> u32 {
    match currency {
        "BIF" | "CLP" | "DJF" | "GNF" | "ISK" | "JPY" | "KMF" | "KRW" | "PYG" | "RWF" | "UGX"
        | "UYI" | "VND" | "VUV" | "XAF" | "XOF" | "XPF" => 0,
        "BHD" | "IQD" | "JOD" | "KWD" | "LYD" | "OMR" | "TND" => 3,
        _ => 2,
    }
}

/// The symbol shown for `currency`, or `None` to show the ISO code.
fn symbol(currency: &str, lang: Lang) -> Option<&'static str> {
    let symbol = match currency {
        "EUR" => "€",
        "USD" => "$",
        "GBP" => "£",
        "JPY" => "¥",
        _ if lang == Lang::En => return None,
        "CZK" => "Kč",
        "PLN" => "zł",
        "RON" => "lei",
        "HUF" => "Ft",
        _ => return None,
    };
    Some(symbol)
}

/// `minor` units of `currency` as `lang` writes an amount, e.g. `€1,234.50`
/// (en) or `1.234,50 €` (it).
pub(super) fn money(minor: i64, currency: &str, lang: Lang) -> String {
    let currency = currency.trim().to_ascii_uppercase();
    let places = decimals(&currency);
    let magnitude = minor.unsigned_abs();
    let scale = 10u64.pow(places);
    let mut number = group(magnitude / scale, lang.group_separator());
    if places > 0 {
        number.push(lang.decimal_separator());
        number.push_str(&format!(
            "{:0width$}",
            magnitude % scale,
            width = places as usize
        ));
    }
    let sign = if minor < 0 { "-" } else { "" };
    match (lang, symbol(&currency, lang)) {
        (Lang::En, Some(symbol)) => format!("{sign}{symbol}{number}"),
        (_, Some(symbol)) => format!("{sign}{number} {symbol}"),
        (_, None) => format!("{sign}{number} {currency}"),
    }
}

/// `value` with `separator` between groups of three digits.
fn group(value: u64, separator: char) -> String {
    let digits = value.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, digit) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(separator);
        }
        out.push(digit);
    }
    out
}

/// The timezone named `name` (IANA), or UTC when it is unknown.
pub(super) fn timezone(name: &str) -> TimeZone {
    TimeZone::get(name).unwrap_or(TimeZone::UTC)
}

/// A calendar date in long form: `November 26, 2026`, `26 novembre 2026`,
/// `26 de noviembre de 2026`, `26. listopadu 2026`.
pub(super) fn long_date(date: Date, lang: Lang) -> String {
    let (day, year) = (date.day(), date.year());
    let month = lang.months()[usize::from(date.month().unsigned_abs()) - 1];
    match lang {
        Lang::En => format!("{month} {day}, {year}"),
        Lang::Es => format!("{day} de {month} de {year}"),
        Lang::Cs => format!("{day}. {month} {year}"),
        Lang::It | Lang::Fr | Lang::Ro => format!("{day} {month} {year}"),
    }
}

/// `at` as a date in `tz`, in long form.
pub(super) fn date(at: Timestamp, tz: &TimeZone, lang: Lang) -> String {
    long_date(at.to_zoned(tz.clone()).date(), lang)
}

/// `at` as a time of day in `tz`: `7:00 PM` (en), `19:00` (it, fr, ro),
/// `9:05` (es, cs: no leading zero).
pub(super) fn time(at: Timestamp, tz: &TimeZone, lang: Lang) -> String {
    let local = at.to_zoned(tz.clone());
    let (hour, minute) = (local.hour(), local.minute());
    match lang {
        Lang::En => {
            let half = if hour < 12 { "AM" } else { "PM" };
            let hour12 = match hour % 12 {
                0 => 12,
                h => h,
            };
            format!("{hour12}:{minute:02} {half}")
        }
        Lang::Es | Lang::Cs => format!("{hour}:{minute:02}"),
        Lang::It | Lang::Fr | Lang::Ro => format!("{hour:02}:{minute:02}"),
    }
}

/// `at` as date and time in `tz`: `November 26, 2026, 7:00 PM`,
/// `26 novembre 2026, 19:00`, `26 novembre 2026 à 19:00`,
/// `26. listopadu 2026 v 19:00`.
pub(super) fn datetime(at: Timestamp, tz: &TimeZone, lang: Lang) -> String {
    let joiner = match lang {
        Lang::Fr => " à ",
        Lang::Cs => " v ",
        Lang::En | Lang::It | Lang::Es | Lang::Ro => ", ",
    };
    format!("{}{joiner}{}", date(at, tz, lang), time(at, tz, lang))
}

/// Register the `money`, `date`, `datetime` and `time` filters, formatting
/// for `lang` with dates in `tz`.
pub(super) fn add_filters(env: &mut Environment<'_>, lang: Lang, tz: TimeZone) {
    env.add_filter(
        "money",
        move |value: &Value, args: Rest<Value>| match args.as_slice() {
            [] => money_filter(value, None, lang),
            [currency] => money_filter(value, Some(currency), lang),
            _ => Err(invalid("`money` takes at most one argument, the currency")),
        },
    );
    let zone = tz.clone();
    env.add_filter("date", move |value: &Value| {
        let text = timestamp_text(value, "date")?;
        if let Ok(at) = text.parse::<Timestamp>() {
            Ok(date(at, &zone, lang))
        } else if let Ok(date) = text.parse::<Date>() {
            Ok(long_date(date, lang))
        } else {
            Err(invalid(format!(
                "`date` expects an RFC 3339 timestamp or a YYYY-MM-DD date, got {text:?}"
            )))
        }
    });
    let zone = tz.clone();
    env.add_filter("datetime", move |value: &Value| {
        Ok(datetime(timestamp(value, "datetime")?, &zone, lang))
    });
    env.add_filter("time", move |value: &Value| {
        Ok(time(timestamp(value, "time")?, &tz, lang))
    });
}

fn invalid(message: impl Into<String>) -> minijinja::Error {
    minijinja::Error::new(ErrorKind::InvalidOperation, message.into())
}

/// `{{ total|money }}` with a money object, or `{{ minor|money("EUR") }}`.
fn money_filter(
    value: &Value,
    currency: Option<&Value>,
    lang: Lang,
) -> Result<String, minijinja::Error> {
    if value.is_undefined() || currency.is_some_and(Value::is_undefined) {
        return Err(minijinja::Error::from(ErrorKind::UndefinedError));
    }
    let currency = match currency {
        None => None,
        Some(code) => Some(code.as_str().ok_or_else(|| {
            invalid(format!(
                "`money` needs a currency code, got {}",
                code.kind()
            ))
        })?),
    };
    let (minor, code) = match (value.kind(), currency) {
        (ValueKind::Number, Some(code)) => {
            let minor = value.as_i64().ok_or_else(|| {
                invalid(format!(
                    "`money` needs an integer minor amount, got {value}"
                ))
            })?;
            (minor, code.to_owned())
        }
        (ValueKind::Number, None) => {
            return Err(invalid(
                "`money` needs a currency for an integer amount, e.g. `money(\"EUR\")`",
            ));
        }
        (ValueKind::Map, None) => {
            let minor = value.get_attr("minor")?.as_i64();
            let code = value.get_attr("currency")?;
            match (minor, code.as_str()) {
                (Some(minor), Some(code)) => (minor, code.to_owned()),
                _ => {
                    return Err(invalid(
                        "`money` expects an object {minor: integer, currency: code}",
                    ));
                }
            }
        }
        (ValueKind::Map, Some(_)) => {
            return Err(invalid(
                "`money` takes a currency only with an integer amount",
            ));
        }
        (kind, _) => {
            return Err(invalid(format!(
                "`money` expects a money object or an integer amount, got {kind}"
            )));
        }
    };
    if code.len() != 3 || !code.chars().all(|c| c.is_ascii_alphabetic()) {
        return Err(invalid(format!(
            "`money` needs an ISO 4217 currency code, got {code:?}"
        )));
    }
    Ok(money(minor, &code, lang))
}

fn timestamp_text<'v>(value: &'v Value, filter: &str) -> Result<&'v str, minijinja::Error> {
    if value.is_undefined() {
        return Err(minijinja::Error::from(ErrorKind::UndefinedError));
    }
    value.as_str().ok_or_else(|| {
        invalid(format!(
            "`{filter}` expects an RFC 3339 timestamp string, got {}; guard optional values with `{{% if ... %}}`",
            value.kind()
        ))
    })
}

fn timestamp(value: &Value, filter: &str) -> Result<Timestamp, minijinja::Error> {
    let text = timestamp_text(value, filter)?;
    text.parse().map_err(|_| {
        invalid(format!(
            "`{filter}` expects an RFC 3339 timestamp, got {text:?}"
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> Timestamp {
        text.parse().expect("valid timestamp")
    }

    #[test]
    fn amounts_are_grouped_by_thousands_with_the_right_decimals() {
        assert_eq!(money(0, "EUR", Lang::En), "€0.00");
        assert_eq!(money(5, "EUR", Lang::It), "0,05 €");
        assert_eq!(money(123_456_789, "USD", Lang::En), "$1,234,567.89");
        assert_eq!(money(123_456_789, "JPY", Lang::En), "¥123,456,789");
        assert_eq!(money(1_234_567, "KWD", Lang::En), "1,234.567 KWD");
        assert_eq!(money(-123_450, "EUR", Lang::En), "-€1,234.50");
        assert_eq!(money(-123_450, "EUR", Lang::Fr), "-1 234,50 €");
        assert_eq!(
            money(i64::MIN, "EUR", Lang::En),
            "-€92,233,720,368,547,758.08"
        );
    }

    #[test]
    fn currency_codes_are_read_case_insensitively() {
        assert_eq!(money(13_500, "eur", Lang::It), "135,00 €");
    }

    #[test]
    fn an_unknown_timezone_is_utc() {
        let tz = timezone("Mars/Olympus_Mons");
        assert_eq!(time(at("2026-11-26T18:00:00Z"), &tz, Lang::It), "18:00");
    }

    #[test]
    fn english_times_are_twelve_hour_and_others_twenty_four_hour() {
        let tz = TimeZone::UTC;
        assert_eq!(time(at("2026-11-26T00:05:00Z"), &tz, Lang::En), "12:05 AM");
        assert_eq!(time(at("2026-11-26T12:00:00Z"), &tz, Lang::En), "12:00 PM");
        assert_eq!(time(at("2026-11-26T09:05:00Z"), &tz, Lang::It), "09:05");
        assert_eq!(time(at("2026-11-26T09:05:00Z"), &tz, Lang::Cs), "9:05");
    }

    #[test]
    fn unsupported_languages_format_as_english() {
        assert_eq!(Lang::of_locale("de-DE"), Lang::En);
        assert_eq!(Lang::of_locale("CS_cz"), Lang::Cs);
    }
}
