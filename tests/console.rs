//! The console, used as a person uses it: in a real headless Chromium presenting a client
//! certificate from a `.p12` the certificate tool issued (`common::browser`). The wall shows a
//! transfer as it is submitted, an agency's wall only its regions; a case is found by the
//! caller's phone and shown with its history and evidence, the phone masked; an endpoint's
//! certificate cannot open another endpoint's case; an operator replays a dead letter after a
//! confirmation and the replay is audited under their name; the figures page shows what is
//! counted here, independently, from `GET /v1/transfers`, and exports it to Excel.
//!
//! `UPDATE_SCREENSHOTS=1` writes the wall and the figures page to `docs/screenshots/`.

use std::time::Instant;

use serde_json::{json, Value};

use crate::common;
use common::browser::{base64_decode, issue_p12, issue_p12_with, Browser};
use common::net::{sample, start_on_free_port, Client, Receiver, Site};

fn screenshot(name: &str, png: &[u8]) {
    if std::env::var_os("UPDATE_SCREENSHOTS").is_some() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/screenshots");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(name), png).unwrap();
    }
    assert!(png.starts_with(b"\x89PNG"), "a screenshot is a PNG");
}

/// Ningbo's 110 hands the township sample over natively; the transfer's id.
async fn ningbo_transfer(client: &Client, reference: &str) -> String {
    ningbo_transfer_of_case(client, reference, &format!("JJ-{reference}")).await
}

/// … as a transfer of the 110's case `case` (its 接警单编号).
async fn ningbo_transfer_of_case(client: &Client, reference: &str, case: &str) -> String {
    // Taken two minutes ago and handed over now, in Beijing time as the format writes it.
    let beijing = |seconds_ago: i64| {
        let at = liandong::model::Timestamp::now().unix_seconds() - seconds_ago;
        let text = liandong::model::Timestamp::from_unix_seconds(at).unwrap().to_rfc3339();
        text[..19].replace('T', " ")
    };
    let document = String::from_utf8(sample("jjd-json/transfer-ningbo-township.json"))
        .unwrap()
        .replace("2023-05-08 09:43:00", &beijing(0))
        .replace("2023-05-08 09:41:09", &beijing(120))
        .replace("LZ202305080001", reference)
        .replace("JJ202305080001", case);
    let answer = client.post("/v1/native/330200/110/transfers", document.into_bytes()).await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    answer.header("x-liandong-transfer-id").expect("the transfer id")
}

/// Beijing's 110 hands a blocked car to Beijing's 12345 (canonical JSON).
async fn beijing_transfer(client: &Client, reference: &str) -> String {
    let mut request = common::stores::ningbo_request(reference);
    let beijing: liandong::model::EndpointId = "110000/110".parse().unwrap();
    request.from = beijing.clone();
    request.case.origin.endpoint = beijing.clone();
    request.case.origin.unit = None;
    request.case.case_id = liandong::model::Case::id_for(&beijing, reference);
    request.case.location = None;
    request.to_region = None;
    request.case.source_category = None;
    let answer = client.post("/v1/transfers", serde_json::to_vec(&request).unwrap()).await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    answer.json()["transfer"]["transfer_id"].as_str().unwrap().to_string()
}

const FEED_HAS: &str = "return !!document.querySelector('#feed li[data-id=\"ID\"]')";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_wall_shows_transfers_as_they_flow_and_an_agency_only_its_regions() {
    let site = Site::new("console-wall");
    // The Ningbo command centre: an agency granted Ningbo (3302) only.
    site.edit_config(|t| {
        t + "\n[[agency]]\nname = \"nb-command\"\nregions = [\"3302\"]\nrights = [\"read_transfers\", \"watch\"]\n"
    });
    let (addr, admin, _stop) = start_on_free_port(&site).await;
    common::crash::wait_ready(admin).await;
    let (operator_p12, pass) = issue_p12(&site, "operator", "duty");
    let (agency_p12, _) = issue_p12(&site, "agency", "nb-command");
    let operator = Browser::start(&site, &operator_p12, &pass, addr).await;
    let agency = Browser::start(&site, &agency_p12, &pass, addr).await;
    for browser in [&operator, &agency] {
        browser.open("#/wall").await;
        browser
            .wait_for(
                "the wall's live stream",
                20,
                "return document.getElementById('stream-status')?.dataset.live === 'true'",
            )
            .await;
    }
    let who = operator.script("return document.getElementById('who').innerText").await;
    assert!(who.as_str().unwrap().contains("liandong://operator/duty"), "{who}");

    let ningbo = Client::for_endpoint(&site, "330200/110", addr);
    let beijing = Client::for_endpoint(&site, "110000/110", addr);
    let submitted = Instant::now();
    let first = ningbo_transfer(&ningbo, "NB-WALL-1").await;
    operator
        .wait_for("the Ningbo transfer on the operator's wall", 10, &FEED_HAS.replace("ID", &first))
        .await;
    let shown_after = submitted.elapsed();
    agency
        .wait_for("the Ningbo transfer on the agency's wall", 10, &FEED_HAS.replace("ID", &first))
        .await;
    eprintln!("submitted → on the wall: {} ms", shown_after.as_millis());

    let outside = beijing_transfer(&beijing, "BJ-WALL-1").await;
    let second = ningbo_transfer(&ningbo, "NB-WALL-2").await;
    operator
        .wait_for(
            "the Beijing transfer on the operator's wall",
            10,
            &FEED_HAS.replace("ID", &outside),
        )
        .await;
    operator.wait_for("the second Ningbo transfer", 10, &FEED_HAS.replace("ID", &second)).await;
    // The agency's stream is in commit order: once it has the later Ningbo transfer, it has
    // passed the Beijing one — which it must not have shown.
    agency
        .wait_for(
            "the second Ningbo transfer on the agency's wall",
            10,
            &FEED_HAS.replace("ID", &second),
        )
        .await;
    let leaked = agency.script(&FEED_HAS.replace("ID", &outside)).await;
    assert_eq!(leaked, json!(false), "an agency granted 3302 was shown a Beijing transfer");
    let agency_text = agency.text().await;
    assert!(!agency_text.contains("110000"), "Beijing on Ningbo's wall: {agency_text}");

    // Today's counters: everything for the operator, Ningbo's for the agency.
    const TOTAL: &str = "return document.getElementById('today-total').innerText";
    assert_eq!(operator.script(TOTAL).await, json!("3"));
    assert_eq!(agency.script(TOTAL).await, json!("2"));
    let provinces = operator
        .script("return [...document.querySelectorAll('#regions .region')].map(r => r.dataset.province + ':' + r.querySelector('b').innerText)")
        .await;
    let provinces: Vec<&str> =
        provinces.as_array().unwrap().iter().filter_map(Value::as_str).collect();
    assert!(provinces.contains(&"33:2") && provinces.contains(&"11:1"), "{provinces:?}");
    screenshot("wall.png", &operator.screenshot().await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_case_is_found_by_phone_and_only_its_parties_and_operators_open_it() {
    let site = Site::new("console-case");
    let (addr, admin, _stop) = start_on_free_port(&site).await;
    common::crash::wait_ready(admin).await;
    let ningbo = Client::for_endpoint(&site, "330200/110", addr);
    let id = ningbo_transfer(&ningbo, "NB-CASE-1").await;
    let transfer = ningbo.get(&format!("/v1/transfers/{id}")).await.json();
    // The sample's caller rang from 139 0000 0001; the store keeps it normalised.
    assert_eq!(transfer["case"]["caller"]["phone"], "+8613900000001", "{transfer}");
    let phone = "13900000001";

    let (operator_p12, pass) = issue_p12(&site, "operator", "supervisor");
    let operator = Browser::start(&site, &operator_p12, &pass, addr).await;
    // Typed as a person reads it off another screen.
    let spoken = "139-0000-0001";
    operator.open("#/search").await;
    operator
        .wait_for("the search form", 10, "return !!document.getElementById('search-form')")
        .await;
    operator
        .script(&format!(
            "const f = document.getElementById('search-form'); f.kind.value = 'phone'; f.q.value = {}; return true",
            json!(spoken)
        ))
        .await;
    operator.click("#search-go").await;
    let found = operator
        .wait_for(
            "the case found by phone",
            10,
            &format!(
                "return document.querySelector('#search-results tr[data-id=\"{id}\"]')?.innerText"
            ),
        )
        .await;
    assert!(found.as_str().unwrap().contains("139****0001"), "masked: {found}");
    assert!(!operator.text().await.contains(phone), "the full phone is on the page");

    operator.click(&format!("#search-results tr[data-id=\"{id}\"] a")).await;
    operator.wait_for("the case page", 10, "return !!document.getElementById('timeline')").await;
    let states = operator
        .script("return [...document.querySelectorAll('#timeline li')].map(li => li.dataset.state)")
        .await;
    assert!(states.as_array().unwrap().contains(&json!("submitted")), "{states}");
    let received =
        operator.script("return document.querySelector('#case-received pre')?.innerText").await;
    assert!(
        received.as_str().unwrap().contains("NB-CASE-1"),
        "the document as Ningbo's 110 sent it: {received}"
    );
    let audit = operator.script("return document.getElementById('case-audit').innerText").await;
    assert!(audit.as_str().unwrap().contains("transfer.submitted"), "{audit}");
    let deadline = operator
        .script(
            "return document.querySelector('#deadline-receive [data-deadline]')?.dataset.deadline",
        )
        .await;
    assert_eq!(deadline, json!("pending"), "not received yet, the deadline still ahead");
    assert!(!operator.text().await.contains(phone), "the full phone is on the case page");

    // Beijing's 12345 is no party to a Ningbo case: its certificate cannot open it.
    let (beijing_p12, _) = issue_p12_with(&site, "endpoint", "110000/12345", &["--replace"]);
    let stranger = Browser::start(&site, &beijing_p12, &pass, addr).await;
    stranger.open(&format!("#/case/{id}")).await;
    let status = stranger
        .wait_for("the refusal", 10, "return document.getElementById('failure')?.dataset.status")
        .await;
    assert!(status == json!("403") || status == json!("404"), "{status}");
    let shown = stranger.script("return !!document.getElementById('case-summary')").await;
    assert_eq!(shown, json!(false));
    assert!(!stranger.text().await.contains("NB-CASE-1"));
    // Rejected as another region's, and handed over again: the chain on both case pages.
    let hotline = Client::for_endpoint(&site, "330200/12345", addr);
    let now = liandong::model::Timestamp::now().to_rfc3339();
    let rejection =
        json!({"state": "rejected", "at": now, "note": "非本辖区", "reason_code": "wrong_region"});
    let answer = hotline
        .post(&format!("/v1/transfers/{id}/status"), rejection.to_string().into_bytes())
        .await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    let again = ningbo_transfer_of_case(&ningbo, "NB-CASE-2", "JJ-NB-CASE-1").await;
    operator.open(&format!("#/case/{id}")).await;
    operator
        .wait_for(
            "the re-routing on the first case's page",
            10,
            &format!("return !!document.querySelector('#case-chain tr[data-id=\"{again}\"]')"),
        )
        .await;
    // … and on its timeline, at the time it was made, with the transfers linking to it.
    let linked = operator
        .script("return [...document.querySelectorAll('#timeline li[data-state=\"linked\"]')].map(li => li.dataset.rel + ' ' + li.innerText).join('\\n')")
        .await;
    let linked = linked.as_str().unwrap();
    assert!(linked.starts_with("rerouted_from ") && linked.contains(&again), "{linked}");
    let listed =
        operator.script("return document.getElementById('linkage-linked-from')?.innerText").await;
    assert!(listed.as_str().unwrap_or_default().contains(&again), "{listed}");
    operator.open(&format!("#/case/{again}")).await;
    let link = operator
        .wait_for(
            "the link back on the second's",
            10,
            "return document.getElementById('case-links')?.innerText",
        )
        .await;
    assert!(
        link.as_str().unwrap().contains(&id) && link.as_str().unwrap().contains("rerouted_from"),
        "{link}"
    );

    // … and its own console has no operations page.
    let ops_hidden = stranger.script("return document.getElementById('nav-ops').hidden").await;
    assert_eq!(ops_hidden, json!(true));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_replays_a_dead_letter_after_confirming_and_it_is_audited() {
    let (site, _hotline, police) = common::net::ningbo_desks_down("console-dead").await;
    let (addr, admin, _stop) = start_on_free_port(&site).await;
    common::crash::wait_ready(admin).await;
    let ningbo = Client::for_endpoint(&site, "330200/110", addr);
    let id = ningbo_transfer(&ningbo, "NB-DEAD-1").await;

    let (operator_p12, pass) = issue_p12(&site, "operator", "night-shift");
    let operator = Browser::start(&site, &operator_p12, &pass, addr).await;
    operator.open("#/ops").await;
    // The transfer died, so did the notice of its return to Ningbo's 110 (down too).
    let mut letters = 0;
    for _ in 0..100 {
        operator.open("#/ops").await;
        letters = operator
            .wait_for(
                "the dead letters table",
                10,
                "return document.getElementById('dead-table') ? document.querySelectorAll('#dead-table tbody tr').length : (document.querySelector('#dead-letters p') ? -1 : 0)",
            )
            .await
            .as_i64()
            .unwrap();
        if letters == 2 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(letters, 2, "the transfer and the notice of its return");
    // The certificates in use, with their expiry: the server's, a year or more ahead.
    let server_days = operator
        .script("return document.querySelector('#certificates-table tr[data-which=\"server\"]')?.dataset.daysLeft")
        .await;
    assert!(
        server_days.as_str().and_then(|d| d.parse::<i64>().ok()).is_some_and(|d| d > 300),
        "{server_days}"
    );
    // Ningbo's 110 is back: replay the notice to it.
    police.up.store(true, std::sync::atomic::Ordering::SeqCst);
    let notice = operator
        .script("return [...document.querySelectorAll('#dead-table tbody tr')].find(r => r.children[2].innerText === 'status').dataset.delivery")
        .await;
    let notice = notice.as_str().unwrap().to_string();
    operator.click(&format!("#dead-table tr[data-delivery=\"{notice}\"] button.replay")).await;
    let question = operator.accept_dialog().await;
    assert!(question.contains(&id) && question.contains("330200/110"), "{question}");
    operator
        .wait_for(
            "the replay's notice",
            10,
            &format!(
                "return document.getElementById('ops-notice').dataset.replayed === '{notice}'"
            ),
        )
        .await;
    common::net::eventually(10, "the notice delivered to Ningbo's 110", || {
        !police.received().is_empty()
    })
    .await;

    // Audited with who did it.
    let ops = Client::operator(&site, addr);
    let evidence = ops.get(&format!("/v1/transfers/{id}/evidence")).await.json();
    let replayed: Vec<&Value> = evidence["audit"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["action"] == "delivery.replayed")
        .collect();
    assert_eq!(replayed.len(), 1, "{evidence}");
    assert_eq!(replayed[0]["actor"], "liandong://operator/night-shift", "{evidence}");

    // The directory's coverage, asked on the same page.
    operator
        .script("document.querySelector('#coverage-form input[name=region]').value = '330203'; return true")
        .await;
    operator.click("#coverage-go").await;
    let no_unit = operator
        .wait_for(
            "the coverage",
            10,
            "return document.getElementById('coverage-summary')?.dataset.noUnit",
        )
        .await;
    assert!(
        no_unit.as_str().and_then(|n| n.parse::<u32>().ok()).is_some_and(|n| n > 0),
        "{no_unit}"
    );

    // An agency's console has no replay: operators only.
    let (agency_p12, _) = issue_p12(&site, "agency", "demo-2");
    let agency = Browser::start(&site, &agency_p12, &pass, addr).await;
    agency.open("#/ops").await;
    agency.wait_for("operators only", 10, "return !!document.getElementById('ops-only')").await;
    assert_eq!(
        agency.script("return document.querySelectorAll('button.replay').length").await,
        json!(0)
    );
}

/// Drives four Ningbo transfers through their states over the API; returns their ids.
async fn four_transfers(site: &Site, addr: std::net::SocketAddr) -> Vec<String> {
    let police = Client::for_endpoint(site, "330200/110", addr);
    let hotline = Client::for_endpoint(site, "330200/12345", addr);
    let mut ids = Vec::new();
    for n in 0..4 {
        ids.push(ningbo_transfer(&police, &format!("NB-FIG-{n}")).await);
    }
    let now = || liandong::model::Timestamp::now().to_rfc3339();
    let status = |id: &String, update: Value| {
        let hotline = hotline.clone();
        let path = format!("/v1/transfers/{id}/status");
        async move {
            let answer = hotline.post(&path, update.to_string().into_bytes()).await;
            assert_eq!(answer.status, 200, "{update}: {}", answer.text());
        }
    };
    status(&ids[0], json!({"state": "received", "at": now()})).await;
    status(&ids[1], json!({"state": "received", "at": now()})).await;
    status(&ids[1], json!({"state": "resolved", "at": now(), "resolution": {"result": "已联系车主挪车", "resolved_at": now()}})).await;
    status(&ids[2], json!({"state": "rejected", "at": now(), "note": "非本辖区", "reason_code": "wrong_region"})).await;
    ids
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_figures_page_shows_what_the_api_lists_and_exports_it_to_excel() {
    let site = Site::new("console-figures");
    let (addr, admin, _stop) = start_on_free_port(&site).await;
    common::crash::wait_ready(admin).await;
    four_transfers(&site, addr).await;

    // Counted here from the list the same identity reads.
    let (operator_p12, pass) = issue_p12(&site, "operator", "linkage-office");
    let ops = Client::operator(&site, addr);
    let listed = ops.get("/v1/transfers?limit=500").await.json();
    let transfers = listed["transfers"].as_array().unwrap();
    let reached = |t: &Value, state: &str| {
        t["history"].as_array().unwrap().iter().any(|h| h["state"] == state)
    };
    let count = |f: &dyn Fn(&Value) -> bool| transfers.iter().filter(|t| f(t)).count();
    let expected = json!({
        "transfers": transfers.len(),
        "received_on_time": count(&|t| reached(t, "received")),
        "resolved": count(&|t| reached(t, "resolved")),
        "rejected": count(&|t| t["state"] == "rejected"),
    });
    assert_eq!(
        expected,
        json!({"transfers": 4, "received_on_time": 2, "resolved": 1, "rejected": 1})
    );

    let browser = Browser::start(&site, &operator_p12, &pass, addr).await;
    browser.open("#/figures").await;
    browser
        .wait_for("the figures table", 20, "return !!document.getElementById('figures-table')")
        .await;
    let shown = browser
        .script(
            "const v = k => Number(document.querySelector(`#figures-table tr[data-figure=\"${k}\"] td:nth-child(2)`).dataset.value);
             return {transfers: v('transfers'), received_on_time: v('received_on_time'), resolved: v('resolved'), rejected: v('rejected')}",
        )
        .await;
    assert_eq!(shown, expected, "the page against the list");
    let rate = browser.script("return document.querySelector('#figures-table tr[data-figure=\"rejected\"] td:nth-child(3)').innerText").await;
    assert_eq!(rate, json!("25.0%"));
    let bars = browser.script("return echarts.getInstanceByDom(document.getElementById('top-chart')).getOption().series[0].data").await;
    assert_eq!(bars, json!([4]), "one category, four transfers, drawn");

    // Exported to Excel: a workbook a spreadsheet reads, Chinese headers and the numbers.
    let workbook = browser
        .script(
            "const bytes = Xlsx.workbook([{name: '考核指标', rows: Xlsx.rowsOf(document.getElementById('figures-table'))}]);
             let s = ''; bytes.forEach(b => s += String.fromCharCode(b)); return btoa(s)",
        )
        .await;
    let bytes = base64_decode(workbook.as_str().unwrap());
    let file = site.dir.join("figures.xlsx");
    std::fs::write(&file, &bytes).unwrap();
    let read = std::process::Command::new("python3")
        .args([
            "-c",
            "import sys, zipfile; z = zipfile.ZipFile(sys.argv[1]); bad = z.testzip(); \
             print('crc', bad); print(z.read('xl/workbook.xml').decode()); print(z.read('xl/worksheets/sheet1.xml').decode())",
        ])
        .arg(&file)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&read.stdout);
    assert!(read.status.success(), "{text}{}", String::from_utf8_lossy(&read.stderr));
    assert!(text.contains("crc None"), "every entry's CRC holds: {text}");
    assert!(text.contains("name=\"考核指标\""), "{text}");
    for cell in ["签收及时率", "办结率", "退回率", "<v>4</v>", "<v>0.25</v>"] {
        assert!(text.contains(cell), "{cell} in {text}");
    }

    // The monthly report for this month, and English by the switch.
    browser.click("#figures-report").await;
    let title = browser
        .wait_for(
            "the report's title",
            10,
            "return document.getElementById('report-title')?.innerText",
        )
        .await;
    assert!(title.as_str().unwrap().contains("联动月报"), "{title}");
    screenshot("figures.png", &browser.screenshot().await);
    browser.click("#lang").await;
    browser
        .wait_for("English", 10, "return document.querySelector('#bar nav a[href=\"#/figures\"]').innerText === 'Figures'")
        .await;
    browser.script("localStorage.removeItem('liandong.lang'); return true").await;
}

/// The APIs the console adds, without a browser: who the caller is, and a case's evidence to
/// its readers only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whoami_and_a_cases_evidence_follow_the_read_policy() {
    let site = Site::new("console-api");
    let hotline = Receiver::start(&site, "330200/12345").await;
    site.push_to("330200/12345", &hotline.url());
    let (addr, admin, _stop) = start_on_free_port(&site).await;
    common::crash::wait_ready(admin).await;
    let ningbo = Client::for_endpoint(&site, "330200/110", addr);
    let id = ningbo_transfer(&ningbo, "NB-EVIDENCE-1").await;
    common::net::eventually(10, "delivered", || !hotline.received().is_empty()).await;

    let me = ningbo.get("/v1/whoami").await.json();
    assert_eq!(
        (me["kind"].as_str(), me["identity"].as_str(), me["operator"].as_bool()),
        (Some("endpoint"), Some("liandong://endpoint/330200/110"), Some(false)),
        "{me}"
    );
    let agency = Client::for_identity(&site, "agency-demo", addr);
    let them = agency.get("/v1/whoami").await.json();
    assert_eq!(them["regions"], json!(["3302"]), "{them}");
    // The certificates in use are for operators only.
    assert_eq!(agency.get("/v1/certificates").await.status, 403);
    let ops = Client::operator(&site, addr);
    let loaded = ops.get("/v1/certificates").await.json();
    let which: Vec<&str> = loaded["certificates"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|c| c["which"].as_str())
        .collect();
    assert!(which.contains(&"server") && which.contains(&"ca"), "{loaded}");
    assert!(loaded["crl_next_update"].is_string(), "the site's CRL: {loaded}");
    // The directory's coverage: with no records, Haishu district's blocked cars have no unit.
    let coverage = ops.get("/v1/directory/coverage?region=330203&category=NP07").await.json();
    assert_eq!(
        (coverage["cells"].as_u64(), coverage["no_unit"].as_u64()),
        (Some(1), Some(1)),
        "{coverage}"
    );
    assert_eq!(coverage["gaps"][0]["answered_by"], Value::Null, "{coverage}");
    let bad = ops.get("/v1/directory/coverage?region=33x").await;
    assert_eq!(bad.status, 400);
    assert!(bad.text().contains("region"), "{}", bad.text());

    let evidence = ningbo.get(&format!("/v1/transfers/{id}/evidence")).await.json();
    // The document as the origin sent it, as text.
    let received = evidence["received"].as_str().unwrap();
    assert!(
        received.contains("\"LZBH\": \"NB-EVIDENCE-1\"") && received.contains("望春路88号"),
        "{received}"
    );
    let actions: Vec<&str> =
        evidence["audit"].as_array().unwrap().iter().filter_map(|a| a["action"].as_str()).collect();
    assert!(actions.contains(&"transfer.submitted"), "{actions:?}");
    let delivery = &evidence["deliveries"][0];
    assert_eq!(delivery["destination"], "330200/12345");
    // The native document as the destination received it, byte for byte as text.
    let sent = hotline.received()[0].body.clone();
    assert_eq!(delivery["document"].as_str().unwrap().as_bytes(), &sent[..], "{evidence}");

    let stranger = Client::for_endpoint(&site, "110000/12345", addr);
    let refused = stranger.get(&format!("/v1/transfers/{id}/evidence")).await;
    assert!(matches!(refused.status, 403 | 404), "{}", refused.text());
    assert!(!refused.text().contains("NB-EVIDENCE-1"));
}

/// A jurisdiction dispute settled in the console (`linkage.md`): Ningbo's 110 desk disputes a
/// rejection out of scope on the case page; the linkage office finds it on its work list,
/// hears both sides and overrules the rejection; the transfer is back with the 12345 and the
/// figures count the dispute.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dispute_is_opened_by_the_desk_and_decided_by_the_linkage_office() {
    let site = Site::new("console-linkage");
    site.edit_config(|t| {
        t + "\n[[office]]\nname = \"nb-office\"\nregions = [\"3302\"]\nrights = [\"read_transfers\", \"watch\", \"decide_disputes\"]\n"
    });
    let (addr, admin, _stop) = start_on_free_port(&site).await;
    common::crash::wait_ready(admin).await;
    let police = Client::for_endpoint(&site, "330200/110", addr);
    let hotline = Client::for_endpoint(&site, "330200/12345", addr);
    let id = ningbo_transfer(&police, "NB-DISPUTE-1").await;
    // The 12345 signs for it and hands it back as out of scope, natively (gd-json, formats.md).
    let now = liandong::model::Timestamp::now().format_beijing("yyyy/MM/dd HH:mm:ss");
    for (gdzt, sm) in [("签收", "已签收"), ("退回", "【非职责范围】挪车属公安交警职责")]
    {
        let doc = json!({"lzbh": id, "gdzt": gdzt, "czsj": now, "sm": sm}).to_string();
        let answer = hotline.post("/v1/native/330200/12345/status", doc.into_bytes()).await;
        assert_eq!(answer.json()["code"], json!("200"), "{}", answer.text());
    }
    let (desk_p12, pass) = issue_p12_with(&site, "endpoint", "330200/110", &["--replace"]);
    let (office_p12, _) = issue_p12(&site, "office", "nb-office");
    let desk = Browser::start(&site, &desk_p12, &pass, addr).await;
    let office = Browser::start(&site, &office_p12, &pass, addr).await;

    desk.open(&format!("#/case/{id}")).await;
    desk.wait_for(
        "the linkage actions",
        20,
        "return !!document.getElementById('linkage-do-dispute')",
    )
    .await;
    let basis = desk.script("return document.getElementById('linkage-basis').innerText").await;
    assert_eq!(basis, json!("清单内事项"), "NP07 is on Ningbo 110's list");
    desk.script("document.getElementById('linkage-note').value = '车辆堵门属挪车服务，在分流清单内'; return true").await;
    desk.click("#linkage-do-dispute").await;
    desk.wait_for(
        "the dispute, open",
        20,
        "return document.querySelector('#linkage-dispute')?.dataset.state === 'open'",
    )
    .await;
    assert_eq!(
        desk.script("return !!document.getElementById('linkage-do-overruled')").await,
        json!(false),
        "a desk cannot decide"
    );

    office.open("#/linkage").await;
    office
        .wait_for(
            "the dispute on the office's work list",
            20,
            &format!("return !!document.querySelector('#linkage-disputes tr[data-id=\"{id}\"]')"),
        )
        .await;
    office.open(&format!("#/case/{id}")).await;
    office
        .wait_for(
            "the decision buttons",
            20,
            "return !!document.getElementById('linkage-do-overruled')",
        )
        .await;
    office
        .script("document.getElementById('linkage-note').value = '三方通话后认定属12345'; document.getElementById('linkage-call-ref').value = 'SFTH-7'; return true")
        .await;
    office.click("#linkage-do-note").await;
    office
        .wait_for(
            "the consultation note",
            20,
            "return [...document.querySelectorAll('#linkage-dispute li')].some(li => li.innerText.includes('SFTH-7'))",
        )
        .await;
    office
        .script("document.getElementById('linkage-note').value = '经会商属12345职责'; return true")
        .await;
    office.click("#linkage-do-overruled").await;
    office
        .wait_for(
            "the decision",
            20,
            "return document.querySelector('#linkage-decision')?.dataset.outcome === 'overruled'",
        )
        .await;
    let state = office.script("return document.getElementById('case-state').innerText").await;
    assert!(state.as_str().unwrap().contains("已送达"), "back with the 12345: {state}");
    let timeline = office.script("return document.getElementById('timeline').innerText").await;
    assert!(timeline.as_str().unwrap().contains("争议裁定"), "{timeline}");
    // As the API says, independently.
    let transfer = hotline.get(&format!("/v1/transfers/{id}")).await.json();
    assert_eq!(transfer["dispute"]["decision"]["by"], json!("liandong://office/nb-office"));
    assert_eq!(transfer["dispute"]["notes"][0]["call_ref"], json!("SFTH-7"));
    office.open("#/linkage").await;
    office
        .wait_for(
            "the emptied work list",
            20,
            "return !!document.getElementById('linkage-no-disputes')",
        )
        .await;

    // The figures count it.
    office.open("#/figures").await;
    office
        .wait_for("the figures form", 20, "return !!document.getElementById('figures-query')")
        .await;
    office.click("#figures-query").await;
    office
        .wait_for(
            "the linkage figures",
            20,
            "return document.querySelector('#linkage-table tr[data-figure=\"disputes overruled\"] td.num')?.dataset.value === '1'",
        )
        .await;
}
