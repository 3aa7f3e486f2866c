from twisted.application.service import ServiceMaker

smx = ServiceMaker("smx", "smx.tap", "smx: a sendmail X mail transfer agent", "smx")
