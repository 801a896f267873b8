"""The playground page (``GET /``) in a real headless Chromium, driven by selenium: generate, then
click a character and see what it was drawn from and what every head attended to."""

from __future__ import annotations

import shutil
from pathlib import Path

import httpx
import pytest

from tests.servetools import serving
from tests.training import train_tiny, train_tiny_bpe

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
DRIVER = shutil.which("chromedriver")
pytestmark = pytest.mark.skipif(
    not (CHROMIUM and DRIVER), reason="chromium and chromium-driver are not installed (.ci/run installs them: "
    "apt-get install chromium chromium-driver)")


@pytest.fixture(scope="module")
def url(tmp_path_factory: pytest.TempPathFactory):
    with serving(train_tiny(name="serve", root=tmp_path_factory.mktemp("playground"))) as base:
        yield base


@pytest.fixture
def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1400,1000"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(DRIVER), options=options)
    driver.set_page_load_timeout(20)
    yield driver
    driver.quit()


def test_the_page_is_self_contained():
    page = (Path(__file__).parents[1] / "gptiny_cli" / "serve" / "static" / "playground.html").read_text()
    assert "http://" not in page and "https://" not in page and "<script src" not in page


def test_the_page_is_served_at_the_root(url):
    response = httpx.get(url)
    assert response.status_code == 200 and "gptiny playground" in response.text


def test_generate_then_click_a_character_to_see_its_probabilities_and_every_heads_attention(url, browser, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    wait = WebDriverWait(browser, 20)
    browser.get(url)
    wait.until(lambda b: "block 8" in b.find_element(By.ID, "model").text)
    prompt = browser.find_element(By.ID, "prompt")
    prompt.clear()
    prompt.send_keys("ALICE:")
    browser.find_element(By.ID, "seed").send_keys("3")
    browser.execute_script("const s = document.getElementById('length'); s.value = 40; "
                           "s.dispatchEvent(new Event('input'))")
    browser.find_element(By.ID, "generate").click()
    wait.until(lambda b: len(b.find_elements(By.CSS_SELECTOR, "#text .gen")) == 40
               and b.find_element(By.ID, "generate").is_enabled())
    generated = browser.find_elements(By.CSS_SELECTOR, "#text .gen")
    generated[5].click()
    wait.until(lambda b: b.find_elements(By.CSS_SELECTOR, "#explain .head"))
    rows = browser.find_elements(By.CSS_SELECTOR, "#explain table tr")
    assert len(rows) >= 10 and all("%" in row.text for row in rows)
    drawn = browser.find_element(By.CSS_SELECTOR, "#explain tr.drawn td.ch").text
    assert drawn == generated[5].text.replace(" ", "␣")
    heads = browser.find_elements(By.CSS_SELECTOR, "#explain .head")
    assert [(h.get_attribute("data-layer"), h.get_attribute("data-head")) for h in heads] == [("0", "0"), ("0", "1")]
    # the block (8 characters) ends with the character before the clicked one: it sees all 8
    assert all(len(h.find_elements(By.CSS_SELECTOR, ".row span")) == 8 for h in heads)
    browser.save_screenshot(str(tmp_path / "playground.png"))
    assert (tmp_path / "playground.png").stat().st_size > 10_000


@pytest.fixture(scope="module")
def bpe_url(tmp_path_factory: pytest.TempPathFactory):
    with serving(train_tiny_bpe(root=tmp_path_factory.mktemp("playground-bpe"), max_iters=150)) as base:
        yield base


def test_on_a_bpe_run_the_text_is_shown_in_pieces_and_a_clicked_piece_is_explained(bpe_url, browser):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    wait = WebDriverWait(browser, 20)
    browser.get(bpe_url)
    wait.until(lambda b: "BPE tokens · block 8" in b.find_element(By.ID, "model").text)
    prompt = "BOB: 你好，世界 7 🙂 the quick brown fox 🦊"
    # typed by script: ChromeDriver's keystrokes cannot carry characters outside the BMP (the emoji)
    browser.execute_script("const p = document.getElementById('prompt'); p.value = arguments[0]; "
                           "p.dispatchEvent(new Event('input'))", prompt)
    browser.find_element(By.ID, "seed").send_keys("3")
    browser.execute_script("const s = document.getElementById('length'); s.value = 30; "
                           "s.dispatchEvent(new Event('input'))")
    browser.find_element(By.ID, "generate").click()
    wait.until(lambda b: "30 tokens in" in b.find_element(By.ID, "status").text)
    body = {"prompt": prompt, "max_tokens": 30, "seed": 3, "temperature": 0.8, "top_p": 1, "top_k": 0}
    completion = httpx.post(f"{bpe_url}/v1/completions", json=body, timeout=30).json()["choices"][0]["text"]
    spans = browser.find_elements(By.CSS_SELECTOR, "#text span")
    assert "".join(s.get_attribute("textContent") for s in spans) == prompt + completion
    # a piece of several characters, its space made visible, explained over the block before it
    words = [s for s in browser.find_elements(By.CSS_SELECTOR, "#text .gen")
             if s.get_attribute("textContent").startswith(" ") and s.get_attribute("textContent")[1:].isalpha()]
    words[-1].click()
    wait.until(lambda b: b.find_elements(By.CSS_SELECTOR, "#explain .head"))
    drawn = browser.find_element(By.CSS_SELECTOR, "#explain tr.drawn td.ch").text
    assert drawn == "␣" + words[-1].get_attribute("textContent")[1:]
    assert browser.find_element(By.CSS_SELECTOR, "#explain p").text.startswith("Token ")
    heads = browser.find_elements(By.CSS_SELECTOR, "#explain .head")
    assert all(len(h.find_elements(By.CSS_SELECTOR, ".row span")) == 8 for h in heads)
