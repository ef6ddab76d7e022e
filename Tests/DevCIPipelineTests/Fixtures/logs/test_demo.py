import unittest

class TestDemo(unittest.TestCase):
    def test_ok(self):
        self.assertEqual(1 + 1, 2)

    def test_fails(self):
        self.assertEqual(1 + 1, 3)

    def test_errors(self):
        raise RuntimeError("boom")

    @unittest.skip("not today")
    def test_skipped(self):
        pass

    def test_docstring(self):
        """Adds numbers."""
        print("noise from the test")
        self.assertTrue(True)

    @unittest.expectedFailure
    def test_expected(self):
        self.assertEqual(1, 2)

def test_plain():
    assert True

def test_plain_fail():
    assert 1 == 2, "one is not two"

class TestK:
    def test_param(self):
        pass
