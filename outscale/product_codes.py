"""OUTSCALE's product codes, named as the licence classes an approver weighs.

An OMI's ProductCodes say what its VMs are billed for beyond the VM itself: OUTSCALE's product type
0001 is Linux (the example of ReadProductTypes in the OAPI spec osc-sdk-python ships: `ProductTypeId:
'0001', Description: Linux`) and 0002 Windows, whose licence comes with the OMI. A code the portal
does not know is shown as such: ReadProductTypes in the account names it.
"""

LICENCE_CLASSES = {
    "0001": "Linux",
    "0002": "Windows",
}


def licence_class(code: str) -> str:
    """``0002`` → "Windows"; an unknown code says it is unknown."""
    return LICENCE_CLASSES.get(code, f"product code {code} (not a class OMI Portal knows: see ReadProductTypes)")
