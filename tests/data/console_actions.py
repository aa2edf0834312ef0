"""The console's actions in a real browser: headless Chromium (Debian's,
driven by its own chromedriver through Selenium) against a running mesh
whose registry holds iris-logreg v1 (production), v2 (fails its
validation) and v3 (passes), see tests/tests/cross/console_actions.rs.

    python3 console_actions.py CONFIG.json

CONFIG: {"url": ".../ui/", "observer", "promoter", "admin": API keys,
"collection", "query", "expect_document", "shots", "chromium",
"chromedriver"}. Prints one JSON object with each check's outcome and what
it saw; the Rust test decides. Any exception is reported as such.
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
from selenium.webdriver.support.ui import Select, WebDriverWait

cfg = json.load(open(sys.argv[1]))
out = {"checks": {}, "expected_refusals": [], "unexpected": []}


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


def drain(d, expected=()):
    """Console messages at SEVERE since the last call: those naming an
    expected refusal status (a 401 while signed out, a 403 or a 400 the
    step provoked) are set aside; anything else is unexpected."""
    for e in d.get_log("browser"):
        if e.get("level") != "SEVERE":
            continue
        msg = e.get("message", "")
        if any(f"status of {code}" in msg for code in expected):
            out["expected_refusals"].append(msg[:300])
        else:
            out["unexpected"].append(msg[:500])


def wait(d, cond, secs=20):
    # A page redraws itself (a reload after an action, a refresh timer): an
    # element found a moment ago may be gone; look again.
    return WebDriverWait(d, secs, ignored_exceptions=(StaleElementReferenceException,)).until(cond)


class Notice:
    def __init__(self, cls, text):
        self.cls, self.text = cls, text


def shot(d, name):
    os.makedirs(cfg["shots"], exist_ok=True)
    d.save_screenshot(os.path.join(cfg["shots"], name + ".png"))


def go(d, route):
    """Opens `route`; the same route again reloads it (a hash that does not
    change fires no navigation)."""
    url = cfg["url"] + "#/" + route
    if d.current_url == url:
        d.refresh()
    else:
        d.get(url)


def sign_in(d, key):
    """Signs out if need be, then in with `key` through the dialog."""
    go(d, "models")
    d.execute_script("sessionStorage.clear()")
    d.refresh()
    wait(d, EC.visibility_of_element_located((By.ID, "token")))
    box = d.find_element(By.ID, "token")
    box.clear()
    box.send_keys(key)
    box.send_keys(Keys.ENTER)
    wait(d, EC.invisibility_of_element_located((By.ID, "signin")))
    drain(d, expected=("401",))


def outcome(d, secs=60):
    """The promote/rollback outcome once it is no longer in progress, read
    in one script call (the page may redraw between two reads)."""
    def done(d):
        r = d.execute_script(
            "const n = document.querySelector('#outcome .notice');"
            "return n ? [n.className, n.textContent] : null;")
        return Notice(*r) if r and "info" not in r[0] else False
    return wait(d, done, secs)


def model_page(d):
    go(d, "models/iris-logreg")
    wait(d, EC.presence_of_element_located((By.ID, "move-version")))


def promote(d, version, reason):
    model_page(d)
    Select(d.find_element(By.ID, "move-version")).select_by_value(str(version))
    alias = d.find_element(By.ID, "move-alias")
    alias.clear()
    alias.send_keys("production")
    d.find_element(By.ID, "move-reason").send_keys(reason)
    d.find_element(By.CSS_SELECTOR, "form.promote button[type=submit]").click()
    return outcome(d)


def served_version(d, want, secs=60):
    """Runs iris-logreg in the playground until its answer comes from
    version `want` (the follower swaps a moment after the alias moves)."""
    go(d, "playground?try=" + "model%3Airis-logreg")
    wait(d, EC.presence_of_element_located((By.ID, "in-0")))
    d.find_element(By.ID, "in-0").send_keys("5.1, 3.5, 1.4, 0.2")
    deadline = time.time() + secs
    seen = ""
    while time.time() < deadline:
        d.find_element(By.CSS_SELECTOR, "form.playform button[type=submit]").click()
        seen = wait(d, lambda d: d.execute_script(
            "const c = document.querySelector('#play-out caption')"
            " || document.querySelector('#play-out .notice.error');"
            "return c ? c.textContent : null;"))
        if seen.endswith(f"v{want}"):
            trace = d.find_elements(By.CSS_SELECTOR, "#play-out .run-meta")
            return True, seen + " | " + (trace[0].text if trace else "")
        time.sleep(0.5)
    return False, seen


d = browser()
try:
    # A key that may look but not promote.
    sign_in(d, cfg["observer"])
    go(d, "models?prefix=iris-l")
    wait(d, EC.presence_of_element_located((By.CSS_SELECTOR, "form.filters")))
    wait(d, EC.presence_of_element_located((By.XPATH, "//main//table//a[text()='iris-logreg']")))
    check("models_filter_kept_in_url",
          d.find_element(By.ID, "f-prefix").get_attribute("value") == "iris-l" and "prefix=iris-l" in d.current_url,
          d.current_url)
    names = [a.text for a in d.find_elements(By.CSS_SELECTOR, "main table tbody th a")]
    check("models_list_shows_model", "iris-logreg" in names and "iris-suites" not in names,
          names)
    shot(d, "models")
    drain(d)
    n = promote(d, 3, "not allowed")
    check("promote_without_scope_refused",
          "error" in n.cls and "promote" in n.text, n.text)
    shot(d, "promote-refused-scope")
    drain(d, expected=("403",))

    # The promoter: the gate refuses v2, admits v3.
    sign_in(d, cfg["promoter"])
    n = promote(d, 2, "try the tree")
    check("gated_promotion_refused", "error" in n.cls and "evidence" in n.text, n.text)
    shot(d, "promote-refused-gate")
    drain(d, expected=("400",))
    n = promote(d, 3, "console test")
    check("promotion_done", "ok" in n.cls and "v1 → v3" in n.text, n.text)
    shot(d, "promoted")
    drain(d)
    ok, seen = served_version(d, 3)
    check("inference_answers_from_promoted", ok, seen)
    shot(d, "playground")
    drain(d)

    # Keyboard alone: from the skip link, Tab reaches the promote form.
    model_page(d)
    d.execute_script("document.querySelector('.skip').focus()")
    reached = None
    for _ in range(40):
        d.switch_to.active_element.send_keys(Keys.TAB)
        if d.execute_script("return document.activeElement.id") == "move-version":
            reached = True
            break
    check("keyboard_promote_form_reachable", reached, d.execute_script("return document.activeElement.outerHTML.slice(0, 80)"))

    # Roll back: production returns to v1, inference with it.
    model_page(d)
    btn = wait(d, EC.element_to_be_clickable((By.XPATH, "//button[starts-with(text(),'Roll back to v1')]")))
    btn.click()
    n = outcome(d)
    check("rollback_done", "ok" in n.cls and "v3 → v1" in n.text, n.text)
    shot(d, "rolled-back")
    drain(d)
    ok, seen = served_version(d, 1)
    check("inference_answers_from_rolled_back", ok, seen)
    drain(d)

    # Serving: the replica's model, its registry version, its batches; an
    # unload needs the admin scope.
    go(d, "serving")
    row = wait(d, EC.presence_of_element_located(
        (By.XPATH, "//div[@id='replicas']//tbody/tr[th[text()='iris-logreg']]")), 30)
    wait(d, lambda d: "registry v1" in d.find_element(
        By.XPATH, "//div[@id='replicas']//tbody/tr[th[text()='iris-logreg']]").text, 30)
    row = d.find_element(By.XPATH, "//div[@id='replicas']//tbody/tr[th[text()='iris-logreg']]")
    check("serving_shows_loaded_model",
          "ready" in row.text and "registry v1" in row.text
          and row.find_elements(By.CSS_SELECTOR, "svg.dist rect"), row.text)
    shot(d, "serving")
    row.find_element(By.XPATH, ".//button[starts-with(text(),'Unload')]").click()
    n = outcome(d)
    check("unload_needs_admin", "error" in n.cls and "admin" in n.text, n.text)
    drain(d, expected=("403",))

    # A version compared with another: the manifests differ for the tree.
    go(d, "models/iris-logreg/2?compare=1")
    wait(d, EC.presence_of_element_located((By.CSS_SELECTOR, "table.compare")))
    rows = d.find_elements(By.CSS_SELECTOR, "table.compare tr.differs")
    ev = d.find_elements(By.CSS_SELECTOR, "details.evidence summary")
    check("version_page_compares", rows and ev and "failed" in ev[0].text,
          [len(rows), [e.text for e in ev]])
    shot(d, "compare")
    drain(d)

    # Search by text.
    go(d, "collections/" + cfg["collection"])
    box = wait(d, EC.presence_of_element_located((By.ID, "search-text")))
    box.send_keys(cfg["query"])
    box.send_keys(Keys.ENTER)
    first = wait(d, EC.presence_of_element_located((By.CSS_SELECTOR, "#results table tbody tr th")), 30)
    check("search_by_text_finds_document", first.text.startswith(cfg["expect_document"]), first.text)
    found = [c.text for c in d.find_elements(By.CSS_SELECTOR, "#results table tbody tr td:nth-child(2)")]
    check("search_says_which_retriever_found_each_hit",
          found and all(("meaning #" in f or "words #" in f) for f in found), found)
    shot(d, "search")
    # Words only (BM25): a word of the document finds it, by the text index.
    Select(d.find_element(By.ID, "search-mode")).select_by_value("sparse")
    box = d.find_element(By.ID, "search-text")
    box.clear()
    box.send_keys("full refund")
    box.send_keys(Keys.ENTER)
    cells = "#results table tbody tr td:nth-child(2)"
    wait(d, lambda d: d.find_elements(By.CSS_SELECTOR, cells)
         and all(c.text.startswith("words #") for c in d.find_elements(By.CSS_SELECTOR, cells)), 30)
    top = d.find_element(By.CSS_SELECTOR, "#results table tbody tr th").text
    check("search_by_words_only", top.startswith(cfg["expect_document"]), top)
    drain(d)

    # The operator's view: callers and the audit log.
    sign_in(d, cfg["admin"])
    # A collection made without a text index gains one from the list.
    go(d, "collections")
    add = wait(d, EC.element_to_be_clickable((By.CSS_SELECTOR, "button[aria-label='Add a text index to " + cfg["old_collection"] + "']")))
    add.click()
    row = "//tr[th/a[.='" + cfg["old_collection"] + "']]/td[last()]"
    wait(d, lambda d: d.find_elements(By.XPATH, row) and d.find_element(By.XPATH, row).text == "BM25", 30)
    status = d.find_element(By.ID, "status").text
    check("old_collection_gains_text_index", "1 chunks indexed" in status, status)
    go(d, "collections/" + cfg["old_collection"])
    Select(wait(d, EC.presence_of_element_located((By.ID, "search-mode")))).select_by_value("sparse")
    box = d.find_element(By.ID, "search-text")
    box.send_keys("CUDA toolkit")
    box.send_keys(Keys.ENTER)
    wait(d, lambda d: d.find_elements(By.CSS_SELECTOR, cells)
         and all(c.text.startswith("words #") for c in d.find_elements(By.CSS_SELECTOR, cells)), 30)
    top = d.find_element(By.CSS_SELECTOR, "#results table tbody tr th").text
    check("old_collection_found_by_words", top.startswith("gpu-drivers"), top)
    drain(d)
    go(d, "access")
    wait(d, EC.presence_of_element_located((By.XPATH, "//caption[starts-with(.,'Changes')]")))
    callers = [r.text for r in d.find_elements(By.XPATH, "//table[caption[starts-with(.,'Callers')]]//tbody/tr")]
    check("access_lists_callers",
          any(r.startswith("promoter") and "promote" in r and "never" not in r for r in callers), callers)
    audit = [r.text for r in d.find_elements(By.XPATH, "//table[caption[starts-with(.,'Changes')]]//tbody/tr")]
    moves = [r for r in audit if "alias.move" in r or "alias.rollback" in r]
    check("audit_lists_moves",
          any("promoter" in r and "alias.rollback" in r for r in moves)
          and any("promoter" in r and "alias.move" in r and "ok" in r for r in moves)
          and any("promoter" in r and "refused" in r for r in moves), audit)
    shot(d, "access")
    drain(d)

    # Every remaining page renders without errors; every control is named.
    unnamed = []
    for route in ["overview", "models", "serving", "collections", "metrics", "playground"]:
        go(d, route)
        time.sleep(1.5)
        shot(d, "page-" + route)
        unnamed += d.execute_script(
            "return [...document.querySelectorAll('button, a, input, select, textarea, svg[role=img]')]"
            ".filter(e => !(e.innerText || e.getAttribute('aria-label') || e.getAttribute('aria-labelledby')"
            " || (e.id && document.querySelector(`label[for=${e.id}]`)))).map(e => e.outerHTML.slice(0, 80));")
    drain(d, expected=("403",))
    check("controls_have_names", not unnamed, unnamed)
    check("no_unexpected_console_errors", not out["unexpected"], out["unexpected"])
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
