#!/usr/bin/env python3
"""Regenerates the sample inputs: messages.csv, messages.ndjson, bad_rows.csv and README.md.

Deterministic (fixed seed): running it again gives the same bytes. Standard library only.
    python3 samples/generate.py
"""

import csv
import io
import json
import random
from datetime import datetime, timedelta, timezone
from pathlib import Path

HERE = Path(__file__).resolve().parent
rng = random.Random(20240501)

COLUMNS = [
    "conversationId", "externalId", "app", "channel", "direction", "status", "sentAt",
    "subject", "preview", "createdBy", "lang", "meta.ticket_id", "meta",
]

AGENTS = ["5e8f1c2a9b3d4e0017a1b2c3", "5e8f1c2a9b3d4e0017a1b2c4", "60a7d3e2f1c0b9001234abcd"]


def object_id():
    while True:
        value = "%024x" % rng.getrandbits(96)
        # The sandbox treats ids starting with "dead" as unknown conversations.
        if not value.startswith("dead"):
            return value


# (channel, lang, topic, customer lines, agent lines)
CONVERSATIONS = [
    ("email", "en", "Order #48213 arrived damaged",
     ["Hi, my order arrived today and the mug is broken. Photos attached.",
      "Thanks — yes, the box was crushed on one side, too.",
      "A replacement would be great, thank you!",
      "Got it, the replacement arrived in one piece 🙂"],
     ["Hello Dana,\nsorry about that! Could you confirm the box was damaged as well?",
      "Thanks for confirming. We'll ship a replacement today, no need to return the broken one.",
      "Your replacement is on its way: tracking 1Z999AA10123456784.",
      "Glad to hear it! Closing this ticket, have a great week."]),
    ("email", "fr", "Problème de facturation",
     ["Bonjour, j'ai été débité deux fois pour la commande 55120.",
      "Voici le relevé : 2 × 49,90 € le 3 mars.",
      "Merci beaucoup, c'est réglé de mon côté."],
     ["Bonjour Amélie,\nnous vérifions cela immédiatement.",
      "Le remboursement de 49,90 € a été émis ; comptez 3 à 5 jours ouvrés.",
      "Parfait, bonne journée !"]),
    ("chat", "en", "",
     ["hey, is the \"Pro\" plan billed monthly or yearly?",
      "ok, and can I switch later?",
      "cool, thanks!!",
      "one more thing: do you ship to Canada, Mexico, or only the US?"],
     ["Hi! Both: monthly at $12, or yearly at $120.",
      "Yes, you can switch at any time from Settings > Billing.",
      "You're welcome!",
      "We ship to the US, Canada and Mexico, yes."]),
    ("sms", "en", "",
     ["Where is my package? Order 77310",
      "Thx",
      "It says \"delivered\" but it's not here"],
     ["Hi! It's out for delivery today, ETA 2–4pm.",
      "Sorry to hear that. We've opened a claim with the carrier, and will update you within 24h.",
      "Update: the carrier found it at your neighbour's, unit 4B."]),
    ("email", "ja", "返品について",
     ["こんにちは。注文番号 60231 の商品を返品したいです。",
      "サイズが合いませんでした。",
      "ありがとうございました！"],
     ["お問い合わせありがとうございます。\n返品理由を教えていただけますか？",
      "承知しました。返品ラベルをメールでお送りします。",
      "返金処理が完了しました。"]),
    ("chat", "es", "",
     ["Hola, ¿tienen la chaqueta en talla M?",
      "¿Y en color azul?",
      "Perfecto, la pido ahora mismo 👍"],
     ["¡Hola! Sí, la talla M está disponible.",
      "En azul marino sí, en azul claro no, lo siento.",
      "¡Genial! Cualquier cosa, aquí estamos."]),
    ("email", "de", "Rücksendung – falsche Größe",
     ["Guten Tag, die Schuhe sind eine Nummer zu groß.",
      "Ja, Umtausch in Größe 42 wäre super.",
      "Danke, Paket ist unterwegs."],
     ["Hallo Jürgen,\ngerne tauschen wir die Schuhe um. Möchten Sie Größe 42?",
      "Alles klar, das Rücksendeetikett finden Sie im Anhang.",
      "Vielen Dank, wir melden uns, sobald es eingetroffen ist."]),
    ("sms", "en", "",
     ["Can I change my delivery address?",
      "New address: 12 Elm St, Apt 3, Springfield",
      "👌"],
     ["Sure, what's the new address?",
      "Done, updated to 12 Elm St, Apt 3, Springfield.",
      "Anything else we can help with?"]),
    ("chat", "en", "",
     ["my discount code SPRING20 isn't working",
      "it says \"expired\"",
      "ah ok, that works, thanks"],
     ["Let me check that for you.",
      "It expired on April 30th, sorry! Here's a new one: SUMMER15.",
      "Enjoy your order!"]),
    ("email", "en", "Warranty claim, serial KX-2291",
     ["Hello,\nmy kettle stopped heating after 8 months. Serial KX-2291.",
      "Receipt attached. Bought at the Boston store.",
      "Thanks, the new kettle works perfectly."],
     ["Hi Sam,\nsorry to hear that. It's covered by the 2-year warranty; could you send the receipt?",
      "Thanks, approved! A new kettle ships tomorrow.",
      "Great, thanks for letting us know."]),
    ("email", "pt", "Cancelamento de assinatura",
     ["Olá, gostaria de cancelar a minha assinatura.",
      "Não, obrigado. Só quero cancelar mesmo.",
      "Recebido, obrigado."],
     ["Olá João,\npodemos oferecer 2 meses grátis para ficar. Interessa?",
      "Sem problema, a assinatura foi cancelada. Você terá acesso até 31/05.",
      "Qualquer coisa, estamos à disposição."]),
    ("chat", "zh", "",
     ["你好，我的订单什么时候发货？",
      "订单号是 88402",
      "好的，谢谢！"],
     ["您好！请提供一下订单号。",
      "已查到，明天会发货，发货后会通知您。",
      "不客气，祝您生活愉快！"]),
]

TOTAL_ROWS = 200

# Conversations run longer than their scripted lines: these fill the rest, in any language.
CUSTOMER_FOLLOW_UPS = [
    "Any update on this?",
    "Just following up on my previous message.",
    "Sorry, one more question: is there a fee for that?",
    "OK, I'll wait. Thanks.",
    "I tried again, same result 😕",
    "Could you send me a copy by email, please?",
]
AGENT_FOLLOW_UPS = [
    "Thanks for your patience, we're still looking into it.",
    "I've escalated this to our logistics team, you'll hear from us within 24 hours.",
    "No fee at all, it's included.",
    "Quick update: it's done on our side.",
    "Could you try once more? We've just reset it on our end.",
    "Sent! Let us know if it doesn't arrive.",
]


def sent_at_text(moment, index):
    """Mostly UTC with Z; some rows carry the agent's or customer's offset instead."""
    style = index % 9
    if style == 4:
        offset = timezone(timedelta(hours=2))
    elif style == 7:
        offset = timezone(timedelta(hours=-5))
    else:
        offset = timezone.utc
    local = moment.astimezone(offset)
    text = local.strftime("%Y-%m-%dT%H:%M:%S")
    if index % 5 == 3:
        text += ".%03d" % (local.microsecond // 1000)
    return text + ("Z" if offset == timezone.utc else local.strftime("%z")[:3] + ":" + local.strftime("%z")[3:])


def build_messages():
    messages = []
    external = 4_100_000
    per_conversation = [TOTAL_ROWS // len(CONVERSATIONS)] * len(CONVERSATIONS)
    for index in range(TOTAL_ROWS - sum(per_conversation)):
        per_conversation[index] += 1
    for (channel, lang, topic, customer_lines, agent_lines), count in zip(CONVERSATIONS, per_conversation):
        conversation = object_id()
        ticket = str(rng.randint(10_000, 99_999))
        agent = rng.choice(AGENTS)
        start = datetime(2019, 1, 1, tzinfo=timezone.utc) + timedelta(
            seconds=rng.randint(0, 5 * 365 * 24 * 3600 - 90 * 24 * 3600))
        step = {"email": (3600, 20 * 3600), "chat": (20, 240), "sms": (60, 3600)}[channel]
        moment = start.replace(microsecond=rng.randint(0, 999) * 1000)
        for position in range(count):
            direction = "in" if position % 2 == 0 else "out"
            lines = customer_lines if direction == "in" else agent_lines
            turn = position // 2
            if turn < len(lines):
                preview = lines[turn]
            else:
                pool = CUSTOMER_FOLLOW_UPS if direction == "in" else AGENT_FOLLOW_UPS
                preview = pool[(turn - len(lines) + len(messages)) % len(pool)]
            external += rng.randint(1, 40)
            row = {
                "conversationId": conversation,
                "externalId": f"zd-{external}",
                "app": "zendesk",
                "channel": channel,
                "direction": direction,
                "status": "received" if direction == "in" else "sent",
                "sentAt": sent_at_text(moment, len(messages)),
                "subject": (topic if position == 0 else f"Re: {topic}") if channel == "email" else "",
                "preview": preview,
                "createdBy": agent if direction == "out" else "",
                "lang": lang,
                "meta.ticket_id": ticket if len(messages) % 6 != 5 else "",
                "meta": "",
            }
            if len(messages) % 4 == 1:
                meta = {"via": {"email": "mail", "chat": "web_widget", "sms": "sms"}[channel]}
                if direction == "in" and len(messages) % 8 == 1:
                    meta["tags"] = ["migrated", f"lang:{lang}"]
                row["meta"] = json.dumps(meta, ensure_ascii=False, separators=(",", ":"))
            messages.append(row)
            moment += timedelta(seconds=rng.randint(*step), milliseconds=rng.randint(0, 999))
    rng.shuffle(messages)
    return messages


def csv_text(columns, rows):
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow(row)
    return out.getvalue()


def ndjson_text(rows):
    lines = []
    for row in rows:
        record = {}
        for column in COLUMNS:
            value = row[column]
            if value == "" or column.startswith("meta"):
                continue
            record[column] = value
        # The same order the importer merges a CSV row's meta in: the meta JSON, then meta.<key>.
        meta = json.loads(row["meta"]) if row["meta"] else {}
        if row["meta.ticket_id"]:
            meta["ticket_id"] = row["meta.ticket_id"]
        if meta:
            record["meta"] = meta
        lines.append(json.dumps(record, ensure_ascii=False, separators=(",", ":")))
    return "\n".join(lines) + "\n"


BAD_COLUMNS = [
    "conversationId", "externalId", "app", "channel", "direction", "status", "sentAt",
    "subject", "preview", "createdBy", "modifiedBy", "createdAt", "modifiedAt", "errorAt",
    "size", "auto", "lang", "source", "meta.ticket_id", "meta", "custom", "reference",
    "attachments", "sentiment", "queue", "shortcuts", "kbArticles", "location", "error",
]

CONV = "64b7f0c2a1e3d5f7a9c1e3f5"
AGENT = "5e8f1c2a9b3d4e0017a1b2c3"
ATTACHMENT_ID = "64b7f0c2a1e3d5f7a9c10001"
HUNDRED_AND_ONE = json.dumps({f"k{i}": i for i in range(101)}, separators=(",", ":"))

# (row fields beyond a valid base, expected problems). None as expected means valid.
BASE = {"conversationId": CONV, "app": "zendesk", "channel": "email", "sentAt": "2021-06-01T09:00:00Z"}
CHANNELS = "email, sms, chat, facebook, twitter-dm, twitter-tweet, voice, instagram, whatsapp"
BAD_ROWS = [
    ({"externalId": "bad-001", "direction": "in", "subject": "Valid row", "preview": "Fine."}, []),
    ({"externalId": "bad-002", "direction": "out", "createdBy": AGENT, "size": "2048", "auto": "false",
      "reference": json.dumps({"message": ATTACHMENT_ID, "type": "reply"}),
      "attachments": json.dumps([{"_id": ATTACHMENT_ID, "name": "invoice.pdf",
                                  "contentType": "application/pdf", "contentLength": 2048}]),
      "sentiment": '{"polarity":1,"confidence":0.9}', "queue": json.dumps({"id": ATTACHMENT_ID}),
      "location": '{"countryCode":"FR","cityName":"Lyon"}', "sentAt": "2021-06-01 05:05:00"}, []),
    ({"conversationId": "", "externalId": "bad-003"},
     ["conversationId: missing; every message belongs to a conversation (its 24-character hex id)"]),
    ({"conversationId": "12345", "externalId": "bad-004"},
     ['conversationId: "12345" is not a 24-character lowercase hex id']),
    ({"channel": "", "externalId": "bad-005"},
     [f"channel: missing; Kustomer requires it (one of {CHANNELS})"]),
    ({"channel": "fax", "externalId": "bad-006"}, [f'channel: "fax" is not one of {CHANNELS}']),
    ({"app": "", "externalId": "bad-007"},
     ["app: missing; Kustomer requires it; name the source system, e.g. zendesk"]),
    ({"direction": "inbound", "externalId": "bad-008"}, ['direction: "inbound" is not one of in, out']),
    ({"status": "delivered", "externalId": "bad-009"},
     ['status: "delivered" is not one of sent, received, error']),
    ({"sentAt": "", "externalId": "bad-010"},
     ["sentAt: missing; every row needs its time, because each conversation's messages are created in chronological order"]),
    ({"sentAt": "03/04/2021 10:00", "externalId": "bad-011"},
     ['sentAt: "03/04/2021 10:00" is not a date-time; write it like 2021-03-04T10:00:00Z, 2021-03-04T10:00:00+02:00 or 2021-03-04 10:00:00']),
    ({"sentAt": "2021-03-14 02:30:00", "externalId": "bad-012"},
     ['sentAt: "2021-03-14 02:30:00" does not exist in America/New_York (the clocks skip it when daylight saving time starts); give the time with an offset such as Z or -05:00']),
    ({"sentAt": "2021-11-07 01:30:00", "externalId": "bad-013"},
     ['sentAt: "2021-11-07 01:30:00" is ambiguous in America/New_York (it happens twice when daylight saving time ends, at offsets -04 and -05); give the time with its offset']),
    ({"createdBy": "agent-42", "externalId": "bad-014"},
     ['createdBy: "agent-42" is not a 24-character lowercase hex id']),
    ({"preview": "x" * 10_241, "externalId": "bad-015"},
     ["preview: 10,241 characters; at most 10,240 are allowed"]),
    ({"subject": "é" * 257, "externalId": "bad-016"}, ["subject: 257 characters; at most 256 are allowed"]),
    ({"externalId": "z" * 257}, ["externalId: 257 characters; at most 256 are allowed"]),
    ({"lang": "e" * 101, "externalId": "bad-018"}, ["lang: 101 characters; at most 100 are allowed"]),
    ({"meta": "{oops", "externalId": "bad-019"},
     ["meta: not valid JSON (key must be a string at line 1 column 2)"]),
    ({"meta": "[1,2]", "externalId": "bad-020"}, ["meta: expected an object, found an array"]),
    ({"meta": HUNDRED_AND_ONE, "externalId": "bad-021"}, ["meta: 101 properties; at most 100 are allowed"]),
    ({"meta": '{"ticket_id":"1001"}', "meta.ticket_id": "1002", "externalId": "bad-022"},
     ['meta.ticket_id: the key "ticket_id" is also set in the meta column']),
    ({"size": "large", "externalId": "bad-023"}, ['size: "large" is not a number']),
    ({"auto": "yes", "externalId": "bad-024"}, ['auto: "yes" is not true or false']),
    ({"shortcuts": '["abc"]', "externalId": "bad-025"},
     ['shortcuts[0]: "abc" is not a 24-character lowercase hex id']),
    ({"reference": json.dumps({"message": ATTACHMENT_ID}), "externalId": "bad-026"},
     ["reference.type: missing"]),
    ({"attachments": json.dumps([ATTACHMENT_ID, ATTACHMENT_ID]), "externalId": "bad-027"},
     ["attachments[1]: repeats an earlier item; items must be unique"]),
    ({"sentiment": '{"polarity":5,"confidence":0.5}', "externalId": "bad-028"},
     ["sentiment.polarity: 5 is not one of -1, 0, 1"]),
    ({"queue": "{}", "externalId": "bad-029"}, ["queue: needs id or external"]),
    ({"location": '{"countryCode":"FRA"}', "externalId": "bad-030"},
     ["location.countryCode: 3 characters; at most 2 are allowed"]),
    ({"error": '{"status":"500"}', "externalId": "bad-031"},
     ["error.status: expected a number, found a string"]),
    ({"errorAt": "soon", "externalId": "bad-032"},
     ['errorAt: "soon" is not a date-time; write it like 2021-03-04T10:00:00Z, 2021-03-04T10:00:00+02:00 or 2021-03-04 10:00:00']),
    ({"source": "api", "externalId": "bad-033"}, ['source: "api" is not one of bulk, satisfaction']),
    ({"modifiedBy": "5E8F1C2A9B3D4E0017A1B2C3", "externalId": "bad-034"},
     ['modifiedBy: "5E8F1C2A9B3D4E0017A1B2C3" is not a 24-character lowercase hex id']),
    ({"custom": "42", "externalId": "bad-035"}, ["custom: expected an object, found a number"]),
    ({"kbArticles": '"64b7f0c2a1e3d5f7a9c10001"', "externalId": "bad-036"},
     ["kbArticles: expected an array, found a string"]),
    ({"createdAt": "2021-02-30T10:00:00Z", "modifiedAt": "2021-06-01T09:00:00+25:00", "externalId": "bad-037"},
     ['createdAt: "2021-02-30T10:00:00Z" is not a real date and time',
      'modifiedAt: "2021-06-01T09:00:00+25:00" is not a date-time; write it like 2021-03-04T10:00:00Z, 2021-03-04T10:00:00+02:00 or 2021-03-04 10:00:00']),
    # A quoted preview over three physical lines: the row starts where its first line is.
    ({"preview": "First line,\nsecond \"quoted\" line,\nthird line", "channel": "pigeon", "externalId": "bad-038"},
     [f'channel: "pigeon" is not one of {CHANNELS}']),
    ({"externalId": "bad-039", "direction": "in", "preview": "Valid again, after the multi-line row."}, []),
    # Several problems on one row: every one is reported.
    ({"conversationId": "nope", "channel": "", "app": "", "sentAt": "", "externalId": "bad-040"},
     ['conversationId: "nope" is not a 24-character lowercase hex id',
      f"channel: missing; Kustomer requires it (one of {CHANNELS})",
      "app: missing; Kustomer requires it; name the source system, e.g. zendesk",
      "sentAt: missing; every row needs its time, because each conversation's messages are created in chronological order"]),
    ("UNPARSEABLE", [f"has 3 fields but the header has {len(BAD_COLUMNS)}"]),
    ({"externalId": "bad-001", "direction": "in", "preview": "Same externalId as the first row."},
     ["duplicate: externalId bad-001 already used by line 2"]),
]


def bad_rows_text():
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=BAD_COLUMNS, lineterminator="\n")
    writer.writeheader()
    expectations = []
    line = 2
    for fields, expected in BAD_ROWS:
        if fields == "UNPARSEABLE":
            text = "this row,has only,three fields\n"
            out.write(text)
        else:
            row = dict(BASE)
            row.update(fields)
            before = out.tell()
            writer.writerow(row)
            text = out.getvalue()[before:]
        for problem in expected:
            expectations.append((line, problem))
        if not expected:
            expectations.append((line, None))
        line += text.count("\n")
    return out.getvalue(), expectations


README_HEAD = """# Sample inputs

Generated by `python3 samples/generate.py` (deterministic; edit the script, not the files).

- `messages.csv`: 200 messages of a Zendesk-like migration over 12 conversations, rows shuffled
  (the importer puts each conversation back in time order). Channels email, chat and sms;
  `sentAt` between 2019 and 2023, mostly in UTC (`Z`), some with `+02:00` or `-05:00` offsets;
  `createdBy` (the agent) on outbound rows; a `meta.ticket_id` column and a `meta` JSON column on
  some rows; accents, CJK, emoji, quotes, commas and newlines inside fields. Every row is valid.
  The demo imports this file (it is embedded in the binary).
- `messages.ndjson`: the same 200 messages, in the same order, one JSON object per line, with
  `meta.ticket_id` folded into `meta`. Each line gives the same request body as its CSV row.
- `bad_rows.csv`: a few valid rows and one row per kind of problem. Expected results below are
  for `--timezone America/New_York` (lines 13 and 14 hold local times that fall in that zone's
  daylight-saving gap and overlap; they are valid in UTC). Line numbers are physical lines: the
  row at line 39 spans three lines because of a quoted multi-line preview, so the rows after it
  start two lines further down. The duplicate externalId is not a validation error: the row is
  valid and staging stores it as `duplicate`.

## bad_rows.csv: expected problems

One table row per problem (a row with several problems appears several times). `valid` means
the row is accepted.

| line | expected |
|---|---|
"""


def main():
    messages = build_messages()
    (HERE / "messages.csv").write_text(csv_text(COLUMNS, messages), encoding="utf-8")
    (HERE / "messages.ndjson").write_text(ndjson_text(messages), encoding="utf-8")
    text, expectations = bad_rows_text()
    (HERE / "bad_rows.csv").write_text(text, encoding="utf-8")
    table = "".join(
        f"| {line} | {'valid' if problem is None else '`' + problem + '`'} |\n"
        for line, problem in expectations
    )
    (HERE / "README.md").write_text(README_HEAD + table, encoding="utf-8")


if __name__ == "__main__":
    main()
