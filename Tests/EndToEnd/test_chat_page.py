"""The chat page at GET /, driven in headless Chromium (Debian's chromium and chromium-driver,
which scripts/test installs): a message typed and sent streams its answer into the page, with
the tokens per second shown, and the answer is the one the API gives the same conversation."""
import shutil

import pytest
import requests
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

QUESTION = "What is the capital of France?"


@pytest.fixture(scope="module")
def browser():
    driver_path = shutil.which("chromedriver")
    assert driver_path, "chromedriver is missing: apt-get install chromium chromium-driver (scripts/test installs them)"
    options = webdriver.ChromeOptions()
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(driver_path), options=options)
    yield driver
    driver.quit()


def test_the_page_is_one_self_contained_file(server):
    page = requests.get(server.base + "/", timeout=10)
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "src=" not in page.text and "href=" not in page.text, "the page must load nothing from elsewhere"
    assert requests.head(server.base + "/", timeout=10).status_code == 200


def test_a_message_streams_its_answer_into_the_page(server, client, model_name, browser):
    browser.get(server.base + "/")
    wait = WebDriverWait(browser, 60)
    wait.until(lambda d: d.find_element(By.ID, "model").text == model_name)
    for field, value in (("temperature", "0"), ("max-tokens", "24")):
        element = browser.find_element(By.ID, field)
        element.clear()
        element.send_keys(value)
    browser.find_element(By.ID, "input").send_keys(QUESTION)
    browser.find_element(By.ID, "send").click()
    wait.until(lambda d: "tok/s" in d.find_element(By.ID, "stats").text)
    answers = browser.find_elements(By.CSS_SELECTOR, ".message.assistant")
    assert len(answers) == 1
    expected = client.chat.completions.create(model=model_name, messages=[{"role": "user", "content": QUESTION}],
                                              temperature=0, max_tokens=24)
    assert answers[0].text == expected.choices[0].message.content.strip()
    stats = browser.find_element(By.ID, "stats").text
    assert stats.startswith(f"{expected.usage.completion_tokens} tokens"), stats

    # The conversation goes on: the second question is asked with the first exchange before it.
    browser.find_element(By.ID, "input").send_keys("And of Italy?")
    browser.find_element(By.ID, "send").click()
    wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, ".message.assistant")) == 2
               and "tok/s" in d.find_element(By.ID, "stats").text and not d.find_element(By.ID, "stop").is_enabled())
    second = client.chat.completions.create(model=model_name, temperature=0, max_tokens=24, messages=[
        {"role": "user", "content": QUESTION}, {"role": "assistant", "content": expected.choices[0].message.content},
        {"role": "user", "content": "And of Italy?"}])
    assert browser.find_elements(By.CSS_SELECTOR, ".message.assistant")[1].text == second.choices[0].message.content.strip()
