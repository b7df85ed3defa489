"""The documents stay true: the README's two set-up commands are what CI runs, docs/options.md lists
every flag with its default, requirements.txt never pulls Paddle."""
import re
from pathlib import Path

import main
from conftest import ROOT as ROOT_DIR

ROOT = Path(ROOT_DIR)


def setup_commands() -> list[str]:
    section = (ROOT / 'README.md').read_text().split('## Set up', 1)[1].split('\n## ', 1)[0]
    return re.findall(r'```bash\n(.+?)\n```', section)


def test_two_setup_commands_and_ci_runs_the_test_one():
    demo, tests = setup_commands()
    assert 'main.py --demo' in demo and 'pytest' in tests
    assert tests in (ROOT / '.ci' / 'run').read_text()


def test_options_doc_lists_every_flag_with_its_default():
    rows = dict(re.findall(r'^\| `(--\w+)` \| (.+?) \|', (ROOT / 'docs' / 'options.md').read_text(), flags=re.M))
    flags = {a.option_strings[0]: a for a in main.build_parser()._actions if a.option_strings and a.dest != 'help'}
    assert set(rows) == set(flags)
    for name, action in flags.items():
        if action.default is not None:
            assert f'`{action.default}`' in rows[name], (name, rows[name])


def test_requirements_do_not_pull_paddle():
    lines = [l.split('#')[0].strip() for l in (ROOT / 'requirements.txt').read_text().splitlines()]
    assert not [l for l in lines if l.lower().startswith('paddle')]
