#!/usr/bin/env python3
"""Provincial desks for the end-to-end suite, written from `formats.md` alone.

Each desk is a 110 or 12345 platform as its vendor built it: an HTTPS server (mutual TLS) that
takes the gateway's native documents, checks them against its own interface (refusing what the
interface forbids, as a real desk does), answers its own receipts, and a client that sends its
own transfer and status documents to the gateway. Nothing here comes from Liandong's renderers
or profiles: every field name, code and time layout is typed in from `formats.md`, so a mistake
shared by the gateway's profiles and its tests cannot hide.

Protocol with the test (tests/desks.rs), one line each:
  stdin  <- PLAN {json}            the desks, certificates and cases to play
  stdout -> READY {endpoint: port}  the desks listen
  stdin  <- GO <gateway port>       the gateway is up: play the cases
  stdin  <- STOP                    the test has seen every case end (or gave up)
  stdout -> REPORT {json}           what every desk saw and sent

Flows (the destination reads the flow from a tag in the case's summary, `[flow]`):
  normal   received, accepted, two progress notes in the same second, resolved; origin closes
  reject   the destination rejects (【非职责范围】); the origin re-routes the case (same local
           id, new reference), which then runs normal
  reopen   resolved; the origin reopens (dissatisfied); resolved again; the origin closes
  cancel   received, accepted; the origin cancels
  late     the destination signs three seconds after it has the transfer; then normal
  invalid  the destination answers its own "invalid" receipt: the gateway must hand it back
  busy     the destination answers "busy" the first time it sees the transfer; then normal
"""

import datetime
import http.client
import http.server
import json
import re
import ssl
import sys
import threading
import time
import xml.etree.ElementTree as ET

BEIJING = datetime.timezone(datetime.timedelta(hours=8))
WO_NS = "urn:gov:12345:workorder:2"

# The state names a desk's status documents use, per format (formats.md).
STATUS_CODES = {
    "jjd-json": {"received": "10", "accepted": "20", "rejected": "30", "in_progress": "40", "resolved": "50",
                 "closed": "60", "cancelled": "90"},
    "jqxx-xml": {"received": "QS", "accepted": "SL", "rejected": "TH", "in_progress": "CZ", "resolved": "BJ",
                 "closed": "HF", "cancelled": "CH"},
    "incident-json": {s: s.upper() for s in
                      ["received", "accepted", "rejected", "in_progress", "resolved", "closed", "cancelled"]},
    "gd-json": {"received": "签收", "accepted": "受理", "rejected": "退回", "in_progress": "办理中", "resolved": "办结",
                "closed": "已回访", "cancelled": "撤回"},
    "workorder-xml": {"received": "1", "accepted": "2", "rejected": "3", "in_progress": "4", "resolved": "5",
                      "closed": "6", "cancelled": "9"},
    "ticket-json": {"received": "SIGNED", "accepted": "ACCEPTED", "rejected": "RETURNED", "in_progress": "PROCESSING",
                    "resolved": "FINISHED", "closed": "VISITED", "cancelled": "WITHDRAWN"},
}
SATISFACTION = {
    "jjd-json": {"satisfied": "1", "dissatisfied": "3"},
    "jqxx-xml": {"satisfied": "满意", "dissatisfied": "不满意"},
    "incident-json": {"satisfied": "SATISFIED", "dissatisfied": "DISSATISFIED"},
    "gd-json": {"satisfied": "满意", "dissatisfied": "不满意"},
    "workorder-xml": {"satisfied": "Satisfied", "dissatisfied": "Dissatisfied"},
    "ticket-json": {"satisfied": 1, "dissatisfied": 3},
}
# What each format's category codes look like (its code table's shape, formats.md).
CATEGORY = {
    "jjd-json": r"^\d{6}$", "jqxx-xml": r"^(FJW|JW)\d{2}$", "incident-json": r"^(NONPOLICE\.)?[A-Z_]+$",
    "gd-json": r"^\d{4}$", "workorder-xml": r"^[BJ]\d{2}$", "ticket-json": r"^(FW|JQ)-\d{2}$",
}


class Invalid(Exception):
    """The document breaks the desk's interface: answered with its invalid receipt."""


def now():
    return datetime.datetime.now(BEIJING).replace(microsecond=0)


def need(value, field):
    if value is None or (isinstance(value, str) and not value.strip()):
        raise Invalid(f"{field}: required")
    return value


def region(value, field, digits):
    if value in (None, ""):
        return None
    if not re.fullmatch(r"\d+", str(value)) or len(str(value)) not in digits:
        raise Invalid(f"{field}: expected a {' or '.join(map(str, digits))}-digit region code, got {value!r}")
    return str(value)


def timefmt(value, field, layout):
    try:
        return datetime.datetime.strptime(need(value, field), layout)
    except ValueError:
        raise Invalid(f"{field}: expected {layout}, got {value!r}")


def category(fmt, code, field):
    if not re.fullmatch(CATEGORY[fmt], need(code, field)):
        raise Invalid(f"{field}: not a category code of this desk: {code!r}")
    return code


def parse_xml(body):
    """An XML document in the encoding its declaration names (ElementTree cannot decode GBK)."""
    head = body[:100].decode("ascii", "replace")
    found = re.search(r'encoding="([^"]+)"', head)
    text = body.decode(found.group(1) if found else "utf-8")
    return ET.fromstring(re.sub(r"^<\?xml[^>]*\?>", "", text.lstrip("\ufeff")))


def xml_text(root, path, ns=None):
    node = root.find(path, ns or {})
    return None if node is None or node.text is None else node.text.strip()


# ---- reading what the gateway sends -------------------------------------------------------

def read_document(fmt, body):
    """(kind, reference, fields) of a document the gateway delivered; kind is transfer|status."""
    if fmt in ("jjd-json", "gd-json", "incident-json", "ticket-json"):
        try:
            doc = json.loads(body.decode("utf-8"))
        except Exception as e:
            raise Invalid(f"not JSON: {e}")
    if fmt == "jjd-json":
        if "ZT" in doc:
            return "status", need(doc.get("LZBH"), "LZBH"), status_fields(fmt, doc.get("ZT"), doc.get("SM"), doc.get("MYD"))
        region(doc.get("MBQH"), "MBQH", (6,))  # formats.md: destination region, six digits
        jq = need(doc.get("JQXX"), "JQXX")
        need(jq.get("JJDBH"), "JQXX.JJDBH")
        timefmt(jq.get("BJSJ"), "JQXX.BJSJ", "%Y-%m-%d %H:%M:%S")
        timefmt(doc.get("ZJSJ"), "ZJSJ", "%Y-%m-%d %H:%M:%S")
        region(jq.get("XZQH"), "JQXX.XZQH", (6, 9))
        category(fmt, jq.get("JQLB"), "JQXX.JQLB")
        return "transfer", need(doc.get("LZBH"), "LZBH"), {"summary": need(jq.get("BJNR"), "JQXX.BJNR"),
                                                           "reason": doc.get("ZJYY") or ""}
    if fmt == "gd-json":
        if "gdzt" in doc:
            return "status", need(doc.get("lzbh"), "lzbh"), status_fields(fmt, doc.get("gdzt"), doc.get("sm"), doc.get("myd"))
        region(doc.get("mbqh"), "mbqh", (6, 9))
        gd = need(doc.get("gd"), "gd")
        need(gd.get("gdbh"), "gd.gdbh")
        timefmt(gd.get("ldsj"), "gd.ldsj", "%Y/%m/%d %H:%M:%S")
        region(gd.get("qhdm"), "gd.qhdm", (6, 9))
        category(fmt, gd.get("sqlx"), "gd.sqlx")
        return "transfer", need(doc.get("lzbh"), "lzbh"), {"summary": need(gd.get("sqnr"), "gd.sqnr"), "reason": doc.get("zbsm") or ""}
    if fmt == "incident-json":
        if "status" in doc:
            return "status", need(doc.get("transferRef"), "transferRef"), status_fields(
                fmt, doc.get("status"), doc.get("note"), doc.get("satisfaction"))
        inc = need(doc.get("incident"), "incident")
        if not isinstance(doc.get("transferTime"), int) or not isinstance(inc.get("reportTime"), int):
            raise Invalid("transferTime/incident.reportTime: expected epoch milliseconds")
        category(fmt, need(inc.get("incidentType"), "incident.incidentType").get("code"), "incident.incidentType.code")
        return "transfer", need(doc.get("transferRef"), "transferRef"), {"summary": need(inc.get("content"), "incident.content"),
                                                                         "reason": doc.get("transferReason") or ""}
    if fmt == "ticket-json":
        if "event" in doc:
            return "status", need(doc.get("ref"), "ref"), status_fields(fmt, doc.get("event"), doc.get("remark"), doc.get("satisfaction"))
        tr, ticket = need(doc.get("transfer"), "transfer"), need(doc.get("ticket"), "ticket")
        datetime.datetime.fromisoformat(need(tr.get("time"), "transfer.time"))
        appeal = need(ticket.get("appeal"), "ticket.appeal")
        category(fmt, need(appeal.get("type"), "ticket.appeal.type").get("code"), "ticket.appeal.type.code")
        return "transfer", need(tr.get("ref"), "transfer.ref"), {"summary": need(appeal.get("content"), "ticket.appeal.content"),
                                                                 "reason": tr.get("reason") or ""}
    if fmt == "jqxx-xml":
        head = body[:100].decode("ascii", "replace")
        if 'encoding="GBK"' not in head:
            raise Invalid("the document must declare encoding=\"GBK\"")
        root = parse_xml(body)
        if root.tag == "ZTFK":
            return "status", need(xml_text(root, "LZBH"), "LZBH"), status_fields(
                fmt, xml_text(root, "ZT"), xml_text(root, "SM"), xml_text(root, "MYD"))
        if root.tag != "ZJQQ":
            raise Invalid(f"unexpected root {root.tag}")
        region(xml_text(root, "MBQH"), "MBQH", (6, 9))
        timefmt(xml_text(root, "ZJSJ"), "ZJSJ", "%Y%m%d%H%M%S")
        node = root.find("JQXX/JQLB")
        category(fmt, None if node is None else node.get("DM"), "JQXX.JQLB@DM")
        return "transfer", need(xml_text(root, "LZBH"), "LZBH"), {"summary": need(xml_text(root, "JQXX/NR"), "JQXX.NR"),
                                                                  "reason": xml_text(root, "ZJYY") or ""}
    if fmt == "workorder-xml":
        root = parse_xml(body)
        ns = {"w": WO_NS}
        if root.tag == f"{{{WO_NS}}}StatusReport":
            status = root.find("w:Status", ns)
            return "status", need(xml_text(root, "w:TransferNo", ns), "TransferNo"), status_fields(
                fmt, None if status is None else status.get("code"), xml_text(root, "w:Note", ns),
                xml_text(root, "w:Satisfaction", ns))
        if root.tag != f"{{{WO_NS}}}TransferRequest":
            raise Invalid(f"unexpected root {root.tag}")
        timefmt(xml_text(root, "w:TransferTime", ns), "TransferTime", "%Y-%m-%dT%H:%M:%S")
        target = root.find("w:Target", ns)
        region(None if target is None else target.get("region"), "Target@region", (6, 9))
        node = root.find("w:WorkOrder/w:Category", ns)
        category(fmt, None if node is None else node.get("code"), "WorkOrder.Category@code")
        return "transfer", need(xml_text(root, "w:TransferNo", ns), "TransferNo"), {
            "summary": need(xml_text(root, "w:WorkOrder/w:Content", ns), "WorkOrder.Content"),
            "reason": xml_text(root, "w:Reason", ns) or ""}
    raise Invalid(f"unknown format {fmt}")


def status_fields(fmt, code, note, satisfaction):
    names = {v: k for k, v in STATUS_CODES[fmt].items()}
    if code not in names:
        raise Invalid(f"unknown status code {code!r}")
    sats = {v: k for k, v in SATISFACTION[fmt].items()}
    return {"state": names[code], "note": note or "", "satisfaction": sats.get(satisfaction)}


# ---- writing what a desk sends ------------------------------------------------------------

def receipt(fmt, kind, ref, message=""):
    """(HTTP status, content type, body) of this desk's own receipt."""
    if fmt == "jjd-json":
        code = {"ok": "0000", "invalid": "1001", "busy": "1003"}[kind]
        return {"ok": 200, "invalid": 400, "busy": 429}[kind], "application/json", json.dumps(
            {"CODE": code, "MSG": "成功" if kind == "ok" else message, "LZBH": ref}, ensure_ascii=False).encode()
    if fmt == "gd-json":
        code = {"ok": "200", "invalid": "400", "busy": "429"}[kind]
        return int(code), "application/json", json.dumps(
            {"code": code, "msg": "成功" if kind == "ok" else message, "data": {"lzbh": ref}}, ensure_ascii=False).encode()
    if fmt == "incident-json":
        code = {"ok": 0, "invalid": 400, "busy": 429}[kind]
        return code or 200, "application/json", json.dumps(
            {"code": code, "message": "ok" if kind == "ok" else message, "transferRef": ref}, ensure_ascii=False).encode()
    if fmt == "ticket-json":
        body = {"success": True, "ref": ref} if kind == "ok" else {"success": False, "error": {"kind": kind, "message": message}}
        return {"ok": 200, "invalid": 400, "busy": 429}[kind], "application/json", json.dumps(body, ensure_ascii=False).encode()
    if fmt == "jqxx-xml":
        code = {"ok": "0", "invalid": "1", "busy": "3"}[kind]
        text = f'<?xml version="1.0" encoding="GBK"?><FHXX><CODE>{code}</CODE><MSG>{esc("成功" if kind == "ok" else message)}</MSG><LZBH>{esc(ref)}</LZBH></FHXX>'
        return {"ok": 200, "invalid": 400, "busy": 429}[kind], "application/xml; charset=GBK", text.encode("gbk", "xmlcharrefreplace")
    if fmt == "workorder-xml":
        result = {"ok": "OK", "invalid": "Invalid", "busy": "Busy"}[kind]
        message = "" if kind == "ok" else f"<Message>{esc(message)}</Message>"
        text = f'<?xml version="1.0" encoding="UTF-8"?><Receipt xmlns="{WO_NS}"><Result>{result}</Result><TransferNo>{esc(ref)}</TransferNo>{message}</Receipt>'
        return {"ok": 200, "invalid": 400, "busy": 429}[kind], "application/xml; charset=UTF-8", text.encode()
    raise ValueError(fmt)


def receipt_ok(fmt, body):
    """Whether the gateway's receipt says success, and its message."""
    if fmt in ("jjd-json", "gd-json", "incident-json", "ticket-json"):
        doc = json.loads(body.decode("utf-8"))
        if fmt == "jjd-json":
            return doc.get("CODE") == "0000", doc.get("MSG")
        if fmt == "gd-json":
            return doc.get("code") == "200", doc.get("msg")
        if fmt == "incident-json":
            return doc.get("code") == 0, doc.get("message")
        return doc.get("success") is True, (doc.get("error") or {}).get("message") or doc.get("message")
    root = parse_xml(body)
    if fmt == "jqxx-xml":
        return xml_text(root, "CODE") == "0", xml_text(root, "MSG")
    ns = {"w": WO_NS}
    return xml_text(root, "w:Result", ns) == "OK", xml_text(root, "w:Message", ns)


def esc(text):
    return str(text).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def transfer_document(fmt, case):
    """A transfer document this desk sends: reference, local id, region, category code, summary."""
    t, ref, local, reg, code, summary = now(), case["ref"], case["local_id"], case.get("region"), case["category"], case["summary"]
    if fmt == "jjd-json":
        doc = {"LZBH": ref, "ZJSJ": t.strftime("%Y-%m-%d %H:%M:%S"), "ZJYY": "非警务求助，转12345", "MBPT": "12345",
               "JQXX": {"JJDBH": local, "BJSJ": t.strftime("%Y-%m-%d %H:%M:%S"), "BJRXM": "李女士", "BJDH": "13900000001",
                        "SFNM": "0", "FADD": "某小区3幢", "XZQH": reg, "JQLB": code, "BJNR": summary, "JQDJ": "3"}}
        return json.dumps(doc, ensure_ascii=False).encode()
    if fmt == "gd-json":
        doc = {"lzbh": ref, "zbsj": t.strftime("%Y/%m/%d %H:%M:%S"), "zbsm": "涉警事项，转110", "mbpt": "110", "mbqh": reg,
               "gd": {"gdbh": local, "ldsj": t.strftime("%Y/%m/%d %H:%M:%S"), "ldrxm": "王先生", "ldhm": "13800000002",
                      "sfbm": "否", "sfdz": "某街道某路", "qhdm": reg, "sqlx": code, "sqnr": summary, "jjcd": "一般"}}
        return json.dumps(doc, ensure_ascii=False).encode()
    if fmt == "incident-json":
        ms = int(time.time() * 1000)
        doc = {"transferRef": ref, "transferTime": ms, "transferReason": "非警务，转12345",
               "target": {"platform": "12345", "region": reg},
               "incident": {"incidentNo": local, "reportTime": ms, "reporter": {"name": "张先生", "phone": "13700000003", "anonymous": False},
                            "location": {"address": "朝阳区某路", "adcode": reg},
                            "incidentType": {"code": code, "name": "挪车"}, "content": summary, "priority": "P3"}}
        return json.dumps(doc, ensure_ascii=False).encode()
    if fmt == "ticket-json":
        doc = {"transfer": {"ref": ref, "time": t.isoformat(), "reason": "涉警，转110", "target": {"platform": "110", "region": reg}},
               "ticket": {"id": local, "createdAt": t.isoformat(), "citizen": {"name": "赵女士", "mobile": "13600000004", "confidential": False},
                          "place": {"text": "东城区某胡同", "districtCode": reg},
                          "appeal": {"type": {"code": code, "name": "治安事件"}, "content": summary, "urgent": False, "lifeThreat": False}}}
        return json.dumps(doc, ensure_ascii=False).encode()
    if fmt == "jqxx-xml":
        stamp = t.strftime("%Y%m%d%H%M%S")
        text = (f'<?xml version="1.0" encoding="GBK"?><ZJQQ><LZBH>{esc(ref)}</LZBH><ZJSJ>{stamp}</ZJSJ><ZJYY>非警务，转12345</ZJYY>'
                f'<MBPT>12345</MBPT><MBQH>{reg}</MBQH><JQXX><JJDBH>{esc(local)}</JJDBH><BJSJ>{stamp}</BJSJ>'
                f'<BJR><XM>刘女士</XM><DH>13500000005</DH><NM>0</NM></BJR><DD><DZ>和平区某路</DZ><XZQH>{reg}</XZQH></DD>'
                f'<JQLB DM="{code}">挪车</JQLB><NR>{esc(summary)}</NR><DJ>三级</DJ></JQXX></ZJQQ>')
        return text.encode("gbk", "xmlcharrefreplace")
    if fmt == "workorder-xml":
        stamp = t.strftime("%Y-%m-%dT%H:%M:%S")
        text = (f'<?xml version="1.0" encoding="UTF-8"?><TransferRequest xmlns="{WO_NS}"><TransferNo>{esc(ref)}</TransferNo>'
                f'<TransferTime>{stamp}</TransferTime><Reason>涉警，转110</Reason><Target platform="110" region="{reg}"/>'
                f'<WorkOrder><OrderNo>{esc(local)}</OrderNo><CallTime>{stamp}</CallTime>'
                f'<Caller confidential="false"><Name>陈先生</Name><Phone>13400000006</Phone></Caller>'
                f'<Place region="{reg}"><Address>沈阳市和平区</Address></Place><Category code="{code}">违法犯罪线索</Category>'
                f'<Content>{esc(summary)}</Content><Urgency>Normal</Urgency></WorkOrder></TransferRequest>')
        return text.encode()
    raise ValueError(fmt)


def status_document(fmt, ref, state, note=None, result=None, satisfaction=None, at=None):
    t = at or now()
    code = STATUS_CODES[fmt][state]
    sat = SATISFACTION[fmt].get(satisfaction) if satisfaction else None
    if fmt == "jjd-json":
        doc = {"LZBH": ref, "ZT": code, "CZSJ": t.strftime("%Y-%m-%d %H:%M:%S"), "CZDWDM": "D1", "CZDWMC": "处置单位"}
        doc.update({k: v for k, v in {"SM": note, "CLJG": result, "MYD": sat}.items() if v})
        return json.dumps(doc, ensure_ascii=False).encode()
    if fmt == "gd-json":
        doc = {"lzbh": ref, "gdzt": code, "czsj": t.strftime("%Y/%m/%d %H:%M:%S"), "czdw": {"dm": "D1", "mc": "承办单位"}}
        doc.update({k: v for k, v in {"sm": note, "bjjg": result, "myd": sat}.items() if v})
        return json.dumps(doc, ensure_ascii=False).encode()
    if fmt == "incident-json":
        doc = {"transferRef": ref, "status": code, "time": int(t.timestamp() * 1000), "unit": {"code": "D1", "name": "分局"}}
        doc.update({k: v for k, v in {"note": note, "result": result, "satisfaction": sat}.items() if v})
        return json.dumps(doc, ensure_ascii=False).encode()
    if fmt == "ticket-json":
        doc = {"ref": ref, "event": code, "time": t.isoformat(), "operator": {"code": "D1", "name": "承办单位"}}
        doc.update({k: v for k, v in {"remark": note, "result": result, "satisfaction": sat}.items() if v})
        return json.dumps(doc, ensure_ascii=False).encode()
    if fmt == "jqxx-xml":
        parts = "".join(f"<{k}>{esc(v)}</{k}>" for k, v in (("SM", note), ("CLJG", result), ("MYD", sat)) if v)
        text = (f'<?xml version="1.0" encoding="GBK"?><ZTFK><LZBH>{esc(ref)}</LZBH><ZT>{code}</ZT>'
                f'<CZSJ>{t.strftime("%Y%m%d%H%M%S")}</CZSJ><CZDW DM="D1">派出所</CZDW>{parts}</ZTFK>')
        return text.encode("gbk", "xmlcharrefreplace")
    if fmt == "workorder-xml":
        parts = "".join(f"<{k}>{esc(v)}</{k}>" for k, v in (("Note", note), ("Result", result), ("Satisfaction", sat)) if v)
        text = (f'<?xml version="1.0" encoding="UTF-8"?><StatusReport xmlns="{WO_NS}"><TransferNo>{esc(ref)}</TransferNo>'
                f'<Status code="{code}"/><Time>{t.strftime("%Y-%m-%dT%H:%M:%S")}</Time><Unit code="D1">承办单位</Unit>{parts}</StatusReport>')
        return text.encode()
    raise ValueError(fmt)


# ---- the desks ------------------------------------------------------------------------------

class Desk:
    def __init__(self, spec, plan, report):
        self.endpoint, self.format = spec["endpoint"], spec["format"]
        self.region, self.platform = self.endpoint.split("/")
        self.spec, self.plan, self.report = spec, plan, report
        self.lock = threading.Lock()
        self.seen = {}          # transfer reference (gateway's id) -> number of deliveries seen
        self.down_until = 0.0
        self.busy_once = set()
        self.client = ssl.create_default_context(cafile=plan["ca"])
        self.client.load_cert_chain(spec["cert"], spec["key"])

    # as a client of the gateway
    def send(self, path, body):
        for attempt in range(40):
            try:
                conn = http.client.HTTPSConnection("localhost", self.plan["gateway_port"], context=self.client, timeout=10)
                conn.request("POST", f"/v1/native/{self.region}/{self.platform}/{path}", body,
                             {"content-type": "application/xml" if self.format.endswith("xml") else "application/json"})
                answer = conn.getresponse()
                data = answer.read()
                conn.close()
            except OSError as e:
                self.log("error", {"path": path, "error": str(e)})
                time.sleep(0.25)
                continue
            try:
                ok, message = receipt_ok(self.format, data)
            except Exception as e:  # an answer that is not this desk's receipt is a finding
                self.log("unreadable_receipt", {"path": path, "status": answer.status, "error": str(e),
                                                "body": data.decode("utf-8", "replace")})
                return False, str(e)
            if answer.status == 429:
                time.sleep(0.5)
                continue
            return ok, message
        return False, "gave up"

    def submit(self, case):
        ok, message = self.send("transfers", transfer_document(self.format, case))
        self.log("submitted", {"ref": case["ref"], "ok": ok, "message": message})
        return ok

    def status(self, ref, state, **kw):
        ok, message = self.send("status", status_document(self.format, ref, state, **kw))
        self.log("sent", {"ref": ref, "state": state, "ok": ok, "message": message, "note": kw.get("note")})
        if not ok:
            self.log("refused", {"ref": ref, "state": state, "message": message})
        return ok

    def log(self, what, detail):
        with self.report_lock:
            self.report.setdefault(self.endpoint, []).append({"what": what, **detail})

    # as a server the gateway delivers to
    def handle(self, body):
        if time.time() < self.down_until:
            return None  # down: the connection is dropped
        try:
            kind, ref, fields = read_document(self.format, body)
        except (Invalid, ET.ParseError, ValueError) as e:
            self.log("refused_document", {"error": str(e)})
            return receipt(self.format, "invalid", "", str(e))
        flow = re.search(r"\[(\w+)\]", fields.get("summary", "")) if kind == "transfer" else None
        flow = flow.group(1) if flow else None
        if kind == "transfer" and flow == "invalid":
            self.log("answered_invalid", {"ref": ref})
            return receipt(self.format, "invalid", ref, "本平台不受理该类事项")
        if kind == "transfer" and flow == "busy" and ref not in self.busy_once:
            self.busy_once.add(ref)
            return receipt(self.format, "busy", ref, "系统繁忙")
        with self.lock:
            self.seen[ref] = self.seen.get(ref, 0) + 1
            first = self.seen[ref] == 1
        if kind == "transfer":
            self.log("received", {"ref": ref, "flow": flow, "first": first})
            if first:
                threading.Thread(target=self.play_destination, args=(ref, flow), daemon=True).start()
        else:
            self.log("notice", {"ref": ref, **fields})
            threading.Thread(target=self.on_notice, args=(ref, fields), daemon=True).start()
        return receipt(self.format, "ok", ref)

    def play_destination(self, ref, flow):
        time.sleep(0.2)
        if flow == "late":
            time.sleep(3.0)
        self.status(ref, "received")
        if flow == "reject":
            self.status(ref, "rejected", note="【非职责范围】经核实不属于本平台职责")
            return
        self.status(ref, "accepted")
        if flow == "cancel":
            return
        # two progress notes in the same second are two updates
        at = now()
        self.status(ref, "in_progress", note="已派员前往", at=at)
        self.status(ref, "in_progress", note="已到达现场", at=at)
        time.sleep(1.0)
        self.status(ref, "resolved", note="已处理", result="已办结")

    def on_notice(self, ref, fields):
        """The origin side: what a desk does when it hears of its transfer."""
        case = self.plan["by_ref"].get(ref)
        state = fields["state"]
        if case is None:  # a notice to the destination (closed, cancelled, reopened)
            if state == "in_progress" and fields.get("satisfaction") == "dissatisfied":
                time.sleep(1.0)
                self.status(ref, "resolved", note="重新办理", result="已重办")
            return
        flow = case["flow"]
        if state == "accepted" and flow == "cancel":
            self.status(ref, "cancelled", note="报警人已自行解决")
        elif state == "resolved" and flow == "reopen" and not case.get("reopened"):
            case["reopened"] = True
            time.sleep(1.0)
            self.status(ref, "in_progress", note="群众不满意，要求重办", satisfaction="dissatisfied")
        elif state == "resolved":
            time.sleep(1.0)
            self.status(ref, "closed", note="回访满意", satisfaction="satisfied")
        elif state == "rejected" and flow == "reject" and not case.get("rerouted"):
            case["rerouted"] = True
            again = dict(case, ref=case["ref"] + "-R", flow="normal", summary=case["summary"].replace("[reject]", "[normal]"))
            self.plan["by_ref"][again["ref"]] = again
            self.submit(again)


def serve(desk, plan):
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(plan["server_cert"], plan["server_key"])
    context.load_verify_locations(plan["ca"])
    context.verify_mode = ssl.CERT_REQUIRED

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self):
            # RFC 9112 §3.2.1: a request on a direct connection has the origin form.
            if not self.path.startswith("/"):
                desk.log("absolute_form", {"target": self.path})
            length = int(self.headers.get("content-length", "0"))
            body = self.rfile.read(length)
            answer = desk.handle(body)
            if answer is None:
                self.close_connection = True
                self.connection.close()
                return
            status, ctype, data = answer
            self.send_response(status)
            self.send_header("content-type", ctype)
            self.send_header("content-length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    server.socket = context.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server.server_address[1]


def main():
    line = sys.stdin.readline()
    assert line.startswith("PLAN "), line
    plan = json.loads(line[5:])
    report = {}
    report_lock = threading.Lock()
    Desk.report_lock = report_lock
    desks = {spec["endpoint"]: Desk(spec, plan, report) for spec in plan["desks"]}
    ports = {endpoint: serve(desk, plan) for endpoint, desk in desks.items()}
    print("READY " + json.dumps(ports), flush=True)
    line = sys.stdin.readline()
    assert line.startswith("GO "), line
    plan["gateway_port"] = int(line.split()[1])
    plan["by_ref"] = {case["ref"]: case for case in plan["cases"]}
    down = plan.get("down")
    for case in plan["cases"]:
        desks[case["origin"]].submit(case)
    if down:
        time.sleep(down["after"])
        desks[down["endpoint"]].down_until = time.time() + down["seconds"]
        desks[down["endpoint"]].log("down", {"seconds": down["seconds"]})
    line = sys.stdin.readline()  # STOP: the test has seen every case end (or gave up)
    with report_lock:
        print("REPORT " + json.dumps(report, ensure_ascii=False), flush=True)


if __name__ == "__main__":
    main()
