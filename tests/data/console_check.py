"""The console in a real browser: headless Chromium (Debian's, driven by
its own chromedriver through Selenium) against a running gateway.

    python3 console_check.py CONFIG.json

CONFIG: {"url": ".../ui/", "key": <observe key>, "weak_key": <key without
observe>, "shots": <folder for screenshots>, "chromium": path,
"chromedriver": path}. Prints one JSON object: each check's outcome and
what it saw; the Rust test decides. Any exception is reported as such.
"""

import json
import os
import sys
import time
import traceback

from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.common.exceptions import StaleElementReferenceException
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support import expected_conditions as EC
from selenium.webdriver.support.ui import WebDriverWait

cfg = json.load(open(sys.argv[1]))
out = {"checks": {}, "console_errors": [], "first_paint_ms": None}


def check(name, ok, seen=""):
    out["checks"][name] = {"ok": bool(ok), "seen": str(seen)[:2000]}


def browser():
    o = webdriver.ChromeOptions()
    o.binary_location = cfg["chromium"]
    for a in ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
              "--window-size=1366,900", "--force-prefers-reduced-motion"]:
        o.add_argument(a)
    o.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(service=Service(executable_path=cfg["chromedriver"]), options=o)


def errors(d):
    # Console messages at SEVERE: script errors, CSP violations, failed
    # loads. 401/403 answers the page asked for on purpose are expected
    # while signed out or with the weak key, so those are left to the caller.
    return [e for e in d.get_log("browser") if e.get("level") == "SEVERE"]


def wait(d, cond, secs=20):
    # The overview redraws itself on every sample: an element found a
    # moment ago may be gone; look again.
    return WebDriverWait(d, secs, ignored_exceptions=(StaleElementReferenceException,)).until(cond)


def texts(d, xpath):
    """The text of every node matching `xpath`, read in one script call
    (the page may redraw between two separate reads)."""
    return d.execute_script(
        "const r = document.evaluate(arguments[0], document, null, XPathResult.ORDERED_NODE_SNAPSHOT_TYPE, null);"
        "const out = []; for (let i = 0; i < r.snapshotLength; i++) out.push(r.snapshotItem(i).textContent);"
        "return out;", xpath)


def shot(d, name):
    os.makedirs(cfg["shots"], exist_ok=True)
    d.save_screenshot(os.path.join(cfg["shots"], name + ".png"))


def sign_in(d, key):
    wait(d, EC.visibility_of_element_located((By.ID, "token")))
    box = d.find_element(By.ID, "token")
    box.clear()
    box.send_keys(key)
    box.send_keys(Keys.ENTER)


d = browser()
try:
    # Signed out: the page asks for a key (the mesh API answered 401).
    d.get(cfg["url"])
    wait(d, EC.visibility_of_element_located((By.ID, "signin")))
    check("signed_out_asks_for_key", d.find_element(By.ID, "signin").is_displayed(),
          d.find_element(By.ID, "signin-why").text)
    timing = d.execute_script(
        "const p = performance.getEntriesByType('paint').find(e => e.name === 'first-contentful-paint');"
        "return p ? p.startTime : null;")
    out["first_paint_ms"] = timing
    shot(d, "signin")
    # The expected 401 of the signed-out call, kept for the record.
    out["signed_out_log"] = errors(d)

    # A key without the observe scope: refused in plain words.
    sign_in(d, cfg["weak_key"])
    alert = wait(d, EC.visibility_of_element_located((By.CSS_SELECTOR, "main .error")))
    check("missing_scope_is_refused", "observe" in alert.text, alert.text)
    shot(d, "refused")
    out["refused_log"] = errors(d)
    d.find_element(By.ID, "signout").click()

    # The right key: the overview, live.
    d.get(cfg["url"])
    wait(d, EC.visibility_of_element_located((By.ID, "token")))
    # The signed-out calls' 401s (after the sign-out, and on this load).
    out["signed_out_again_log"] = errors(d)
    sign_in(d, cfg["key"])
    wait(d, EC.presence_of_element_located((By.CSS_SELECTOR, ".topology svg")))
    captions = texts(d, "//main//table/caption")
    serving = texts(d, "//main//td/span[contains(@class,'pill') and text()='serving']")
    check("overview_lists_services", all(any(c.startswith(n) for c in captions)
                                         for n in ["Gateway", "Embedding", "Vector search"]), captions)
    check("every_replica_serving", len(serving) >= 3, len(serving))
    first = d.find_element(By.ID, "status").text
    ok = False
    for _ in range(40):
        time.sleep(0.25)
        if d.find_element(By.ID, "status").text != first:
            ok = True
            break
    check("overview_updates_live", ok, [first, d.find_element(By.ID, "status").text])
    # Calls made meanwhile show as a rate on the gateway's row.
    gw_cell = "//table[caption[starts-with(.,'Gateway')]]//tbody/tr/td[%d]"
    wait(d, lambda d: any(t not in ("—", "0.00") for t in texts(d, gw_cell % 4)), 30)
    rate = (texts(d, gw_cell % 4) or [""])[0]
    check("gateway_rate_shown", rate not in ("—", "0.00"), rate)
    # Every call the test made succeeded: no errors shown.
    errs = (texts(d, gw_cell % 5) or [""])[0]
    check("gateway_errors_zero", errs == "0.0 %", errs)
    shot(d, "overview")
    e = errors(d)
    check("overview_without_console_errors", not e, e)

    # Keyboard alone: the skip link, then the Metrics link, then Enter.
    body = d.find_element(By.TAG_NAME, "body")
    body.send_keys(Keys.TAB)
    focused = d.switch_to.active_element
    check("first_tab_is_skip_link", focused.text == "Skip to content", focused.text)
    focused.send_keys(Keys.ENTER)
    check("skip_link_moves_focus_to_main",
          d.execute_script("return document.activeElement.id") == "main",
          d.execute_script("return document.activeElement.id"))
    d.execute_script("document.querySelector('.skip').focus()")
    reached = None
    for _ in range(12):
        d.switch_to.active_element.send_keys(Keys.TAB)
        a = d.switch_to.active_element
        if a.text == "Metrics":
            reached = a
            break
    check("metrics_link_reachable_by_tab", reached is not None)
    if reached is not None:
        reached.send_keys(Keys.ENTER)
        wait(d, EC.presence_of_element_located((By.CSS_SELECTOR, ".chart svg polyline")), 30)
        figs = d.find_elements(By.CSS_SELECTOR, ".chart figure")
        check("metrics_charts_drawn", len(figs) >= 8, len(figs))
        check("metrics_page_is_current",
              d.find_element(By.CSS_SELECTOR, "a[data-page=metrics]").get_attribute("aria-current") == "page")
        promql = (texts(d, "//details[contains(@class,'promql')]/pre") or [""])[0]
        check("promql_offered", "histogram_quantile" in promql, promql[:200])
        shot(d, "metrics")
        e = errors(d)
        check("metrics_without_console_errors", not e, e)
    # Every image and control has a name.
    unnamed = d.execute_script(
        "return [...document.querySelectorAll('button, a, input, svg[role=img]')]"
        ".filter(e => !(e.innerText || e.getAttribute('aria-label') || e.getAttribute('aria-labelledby')"
        " || (e.id && document.querySelector(`label[for=${e.id}]`)))).map(e => e.outerHTML.slice(0, 80));")
    check("controls_have_names", not unnamed, unnamed)
except Exception:
    out["exception"] = traceback.format_exc()
    try:
        out["log_at_failure"] = d.get_log("browser")
    except Exception:
        pass
    try:
        shot(d, "failure")
    except Exception:
        pass
finally:
    d.quit()
print(json.dumps(out))
