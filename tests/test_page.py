"""The server's page at `/` in a real headless browser (Chromium through Selenium).

One `python -m seq2seq_jax.serve` of the trained attention fixture on a free port of
127.0.0.1: the page fills its direction selector from the server, and typing a sentence of
the fixture's data and clicking Translate shows exactly what `POST /translate` answers for
it (the translation, the alternatives and the attention heatmap, cell by cell); an error
from the API is shown in the status line. With SEQ2SEQ_JAX_SCREENSHOT=1 the translated page
is saved as docs/serving_page.png.

The browser is the distribution's (`.ci/install_browser.sh` installs it): without it the
tests skip, except under CI, where it must be there and they fail instead.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import numpy as np
import pytest

from tests import fixtures_workdir, synthetic

if TYPE_CHECKING:
  from selenium.webdriver.remote.webdriver import WebDriver

REPO = Path(__file__).resolve().parents[1]
SCREENSHOT = REPO / 'docs' / 'serving_page.png'
BROWSERS = ('chromium', 'chromium-browser', 'google-chrome')
READY_TIMEOUT_S = 180.0  # the server compiles every batch shape before it is ready
WAIT_S = 30.0  # for the page: the model is compiled by then, a translation takes milliseconds
SENTENCE = synthetic.make_pairs(60)[1][0]  # a training sentence of the fixture's data
REQUEST = {'source': 'en', 'target': 'fr', 'alternatives': 3, 'attention': True}  # as the page


def _in_ci() -> bool:
  return os.environ.get('CI', '').lower() not in ('', '0', 'false', 'no')


def _browser_paths() -> tuple[str, str]:
  """Chromium's and chromedriver's paths; skips (fails under CI) when either, or Selenium,
  is missing."""
  browser = next((path for path in map(shutil.which, BROWSERS) if path), None)
  driver = shutil.which('chromedriver')
  missing = [name for name, found in (('chromium', browser), ('chromedriver', driver)) if not found]
  try:
    import selenium  # noqa: F401
  except ImportError:
    missing.append('selenium (pip)')
  if missing:
    message = f'{" and ".join(missing)} not installed (run .ci/install_browser.sh)'
    if _in_ci():
      pytest.fail(f'CI needs the browser: {message}')
    pytest.skip(message)
  return browser, driver


@pytest.fixture(scope='module')
def browser() -> Iterator[WebDriver]:
  """Headless Chromium, driven by the system's chromedriver (no driver download)."""
  binary, driver_path = _browser_paths()
  from selenium import webdriver
  from selenium.webdriver.chrome.service import Service

  options = webdriver.ChromeOptions()
  options.binary_location = binary
  for argument in (
    '--headless=new',
    '--no-sandbox',  # CI runs as root, where Chromium's sandbox refuses to start
    '--disable-dev-shm-usage',
    '--disable-gpu',
    '--window-size=1000,900',
    '--lang=en-US',
  ):
    options.add_argument(argument)
  driver = webdriver.Chrome(options=options, service=Service(executable_path=driver_path))
  yield driver
  driver.quit()


def _free_port() -> int:
  with socket.socket() as sock:
    sock.bind(('127.0.0.1', 0))
    return sock.getsockname()[1]


def _serve_command(workdir: Path, port: int) -> list[str]:
  """The server, with one row per batch (the page sends one sentence at a time), so it
  compiles a quarter of the default's batch shapes before it is ready."""
  return [
    sys.executable,
    '-m',
    'seq2seq_jax.serve',
    f'--workdir={workdir}',
    f'--port={port}',
    '--max_batch=1',
  ]


@pytest.fixture(scope='module')
def server(browser: WebDriver, tmp_path_factory: pytest.TempPathFactory) -> Iterator[httpx.Client]:
  """A client of `seq2seq_jax.serve` on the attention fixture, once it is ready (after the
  browser: no server is started when the tests skip). Stopped with SIGTERM."""
  workdir = fixtures_workdir.trained_workdir(tmp_path_factory, 'attention')
  port = _free_port()
  log = tmp_path_factory.mktemp('serve') / 'serve.log'
  with open(log, 'wb') as out:
    process = subprocess.Popen(
      _serve_command(workdir, port), cwd=REPO, stdout=out, stderr=subprocess.STDOUT
    )
  client = httpx.Client(base_url=f'http://127.0.0.1:{port}', timeout=WAIT_S)
  try:
    deadline = time.monotonic() + READY_TIMEOUT_S
    while True:
      if process.poll() is not None:
        pytest.fail(f'the server exited ({process.returncode}):\n{log.read_text()[-3000:]}')
      if time.monotonic() > deadline:
        pytest.fail(f'not ready in {READY_TIMEOUT_S:.0f} s:\n{log.read_text()[-3000:]}')
      try:
        if client.get('/ready').json().get('ready') is True:
          break
      except (httpx.TransportError, ValueError):
        pass  # not listening yet
      time.sleep(0.25)
    yield client
  finally:
    client.close()
    process.send_signal(signal.SIGTERM)
    try:
      process.wait(timeout=30)
    except subprocess.TimeoutExpired:
      process.kill()
      process.wait()


def _wait_for_state(driver: WebDriver, *states: str) -> str:
  """Waits until #status's data-state is one of `states`; returns it."""
  from selenium.webdriver.common.by import By
  from selenium.webdriver.support.ui import WebDriverWait

  status = driver.find_element(By.ID, 'status')
  WebDriverWait(driver, WAIT_S).until(lambda _: status.get_attribute('data-state') in states)
  return status.get_attribute('data-state')


def _open_page(driver: WebDriver, client: httpx.Client) -> None:
  driver.get(str(client.base_url) + '/')
  assert _wait_for_state(driver, 'ready', 'error') == 'ready', _text(driver, 'status')


def _text(driver: WebDriver, element_id: str) -> str:
  from selenium.webdriver.common.by import By

  return driver.find_element(By.ID, element_id).text


def _translate_on_page(driver: WebDriver, sentence: str) -> str:
  """Types `sentence`, clicks Translate and returns the final status state."""
  from selenium.webdriver.common.by import By

  source = driver.find_element(By.ID, 'source-text')
  source.clear()
  source.send_keys(sentence)
  driver.find_element(By.ID, 'translate-button').click()
  return _wait_for_state(driver, 'done', 'error')


def _severe_console_entries(driver: WebDriver) -> list[dict[str, Any]]:
  return [entry for entry in driver.get_log('browser') if entry['level'] == 'SEVERE']


def test_the_page_shows_what_the_api_answers(browser: WebDriver, server: httpx.Client) -> None:
  from selenium.webdriver.common.by import By

  expected = server.post('/translate', json={'q': SENTENCE, **REQUEST})
  assert expected.status_code == 200, expected.text
  expected = expected.json()
  assert expected['translatedText'] and expected['alternatives']

  _open_page(browser, server)
  options = browser.find_elements(By.CSS_SELECTOR, '#direction option')
  languages = server.get('/languages').json()
  pairs = [f'{lang["code"]}|{target}' for lang in languages for target in lang['targets']]
  assert [option.get_attribute('value') for option in options] == pairs == ['en|fr']
  assert options[0].text == 'English → French'

  assert _translate_on_page(browser, SENTENCE) == 'done', _text(browser, 'status')
  assert _text(browser, 'translation') == expected['translatedText']
  shown = browser.find_elements(By.CSS_SELECTOR, '#alternatives li')
  assert browser.find_element(By.ID, 'alternatives').is_displayed()
  assert [item.text for item in shown] == expected['alternatives']

  # The heatmap: source tokens across, output tokens down, each cell the API's weight.
  attention = expected['attention']
  assert browser.find_element(By.ID, 'attention').is_displayed()
  columns = browser.find_elements(By.CSS_SELECTOR, '#attention thead th')
  assert [th.get_attribute('textContent') for th in columns] == ['', *attention['source_tokens']]
  rows = browser.find_elements(By.CSS_SELECTOR, '#attention tbody tr')
  assert [
    row.find_element(By.TAG_NAME, 'th').get_attribute('textContent') for row in rows
  ] == attention['target_tokens']
  cells = [
    [float(td.get_attribute('data-weight')) for td in row.find_elements(By.TAG_NAME, 'td')]
    for row in rows
  ]
  np.testing.assert_allclose(cells, attention['weights'], rtol=1e-6)
  assert _severe_console_entries(browser) == []  # no script error, no failed request

  if os.environ.get('SEQ2SEQ_JAX_SCREENSHOT') == '1':
    chrome, height = browser.execute_script(
      'return [window.outerHeight - window.innerHeight, document.documentElement.scrollHeight]'
    )
    browser.set_window_size(1000, chrome + height)  # the whole page, no scroll bar
    assert browser.save_screenshot(str(SCREENSHOT)), SCREENSHOT


def test_the_page_shows_an_api_error_in_its_status(
  browser: WebDriver, server: httpx.Client
) -> None:
  """A direction the model lacks (forced into the selector) is refused by the API with 400;
  the page shows its message and no stale translation."""
  from selenium.webdriver.common.by import By

  _open_page(browser, server)
  browser.execute_script(
    "const option = document.querySelector('#direction option'); option.value = 'en|xx';"
  )
  refused = server.post('/translate', json={'q': SENTENCE, **REQUEST, 'target': 'xx'})
  assert refused.status_code == 400
  assert _translate_on_page(browser, SENTENCE) == 'error'
  assert _text(browser, 'status') == f'Error: {refused.json()["error"]}'
  assert _text(browser, 'translation') == ''
  assert not browser.find_element(By.ID, 'attention').is_displayed()
