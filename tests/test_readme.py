"""README.md stays true: its two set-up commands, its option table, and what CI runs."""
import re
from pathlib import Path

import main

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / 'README.md').read_text()


def quick_start_commands():
    section = README.split('## Quick start', 1)[1].split('\n## ', 1)[0]
    return re.findall(r'```bash\n(.+?)\n```', section)


def test_exactly_two_setup_commands_demo_and_tests():
    commands = quick_start_commands()
    assert len(commands) == 2
    demo, tests = commands
    assert demo.startswith('pip install paddlepaddle==3.3.1 -r requirements.txt') and 'main.py --demo' in demo
    assert tests.startswith('pip install paddlepaddle==3.3.1 -r requirements.txt') and 'pytest' in tests


def test_ci_runs_the_readme_test_command():
    assert quick_start_commands()[1] in (ROOT / '.ci' / 'run').read_text()


def test_option_table_lists_every_option_with_its_default():
    rows = re.findall(r'^\| `(--\w+)` \| (.+?) \|', README, flags=re.M)
    table = {name: default for name, default in rows}
    parser = main.build_parser()
    options = {a.option_strings[0]: a for a in parser._actions if a.option_strings and a.dest != 'help'}
    assert set(table) == set(options)
    for name, action in options.items():
        if action.default not in (None, False) or action.type is not None:
            assert f'`{action.default}`' in table[name] or name == '--device', (name, table[name])


def test_requirements_do_not_pull_paddle():
    lines = [l.split('#')[0].strip() for l in (ROOT / 'requirements.txt').read_text().splitlines()]
    assert not [l for l in lines if l.lower().startswith('paddle')]
